/**
 * Compacts etcd now, as kube-apiserver itself does every --etcd-compaction-interval (5 min by
 * default): the history before the current revision is dropped, and a watch or list from an older
 * resourceVersion that the API server passes to etcd is answered 410 Gone. Uses etcd's own
 * JSON gateway (POST /v3/kv/range, /v3/kv/compaction) on the test environment's client port.
 */

/** Compacts up to the current revision; returns it. */
export async function compactEtcd(etcdClientPort: number): Promise<number> {
  const base = `http://127.0.0.1:${etcdClientPort}`;
  const range = await post(`${base}/v3/kv/range`, { key: Buffer.from("/").toString("base64") });
  const revision = Number((range as { header?: { revision?: string } }).header?.revision);
  if (!Number.isSafeInteger(revision) || revision <= 0) throw new Error(`etcd answered no revision: ${JSON.stringify(range)}`);
  await post(`${base}/v3/kv/compaction`, { revision: String(revision), physical: true });
  return revision;
}

async function post(url: string, body: unknown): Promise<unknown> {
  const res = await fetch(url, { method: "POST", body: JSON.stringify(body), signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}: ${text}`);
  return JSON.parse(text) as unknown;
}
