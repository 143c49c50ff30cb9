/** Loading multi-document YAML manifests and applying them to the test cluster. */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { KubernetesObjectApi, type KubeConfig, type KubernetesObject } from "@kubernetes/client-node";
import { parseAllDocuments } from "yaml";
import { KubeClient } from "../kube/client.ts";

const FIELD_MANAGER = "classcache-testenv";

export interface Manifest {
  source: string;
  object: KubernetesObject & { metadata: { name: string } };
}

/** Every document of every file, in order; empty documents are skipped. */
export function loadManifests(files: string[]): Manifest[] {
  return files.flatMap((file) => parseManifestFile(file, readFileSync(file, "utf8")));
}

function parseManifestFile(file: string, text: string): Manifest[] {
  const out: Manifest[] = [];
  parseAllDocuments(text).forEach((doc, i) => {
    const source = `${file} (document ${i + 1})`;
    if (doc.errors.length > 0) throw new Error(`${source}: invalid YAML: ${doc.errors[0]?.message}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) return;
    if (!isNamedObject(value)) throw new Error(`${source}: not a Kubernetes object (needs apiVersion, kind, metadata.name)`);
    out.push({ source, object: value });
  });
  return out;
}

function isNamedObject(v: unknown): v is Manifest["object"] {
  if (typeof v !== "object" || v === null) return false;
  const o = v as { apiVersion?: unknown; kind?: unknown; metadata?: { name?: unknown } };
  return typeof o.apiVersion === "string" && typeof o.kind === "string" && typeof o.metadata?.name === "string";
}

/** Namespaces first, then CRDs, then the rest; otherwise the given order. */
function applyOrder(m: Manifest): number {
  if (m.object.kind === "Namespace") return 0;
  if (m.object.kind === "CustomResourceDefinition") return 1;
  return 2;
}

/**
 * Server-side applies every manifest; waits for each CRD to be Established before going on.
 * The applies go out through our client as the parsed YAML, byte for byte: the library's typed
 * models would drop fields they do not model (a CRD schema's `default` and `x-kubernetes-*`,
 * i.e. its CEL rules).
 */
export async function applyManifests(kc: KubeConfig, kubeconfigPath: string, manifests: Manifest[], log: (line: string) => void): Promise<void> {
  const client = KubernetesObjectApi.makeApiClient(kc);
  const raw = KubeClient.load({ kubeconfigPath });
  const ordered = [...manifests].sort((a, b) => applyOrder(a) - applyOrder(b));
  for (const m of ordered) {
    const { apiVersion, kind, metadata } = m.object;
    try {
      const rt = await raw.discover(apiVersion ?? "", kind ?? "");
      if (!rt) throw new Error(`the server has no resource for ${kind} in ${apiVersion}`);
      await raw.apply(rt, m.object as never, { fieldManager: FIELD_MANAGER, force: true });
    } catch (err) {
      throw new Error(`applying ${kind} ${metadata.name} from ${m.source} failed: ${errorText(err)}`, { cause: err });
    }
    log(`applied ${kind} ${metadata.name}`);
    if (kind === "CustomResourceDefinition") await waitForCrdEstablished(client, metadata.name);
  }
}

interface Crd extends KubernetesObject {
  spec?: { group?: string; names?: { kind?: string }; versions?: { name: string; served?: boolean }[] };
  status?: { conditions?: { type: string; status: string; message?: string }[] };
}

/**
 * Established alone is not enough: for a moment after it, lists of the new resource still fail
 * with 429 "storage is (re)initializing" while its watch cache fills. So also wait until every
 * served version can be listed.
 */
async function waitForCrdEstablished(client: KubernetesObjectApi, name: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let problem = "no status yet";
  while (Date.now() < deadline) {
    const crd = await client.read<Crd>({
      apiVersion: "apiextensions.k8s.io/v1",
      kind: "CustomResourceDefinition",
      metadata: { name },
    });
    const conds = crd.status?.conditions ?? [];
    if (conds.some((c) => c.type === "Established" && c.status === "True")) {
      problem = await unlistableVersion(client, crd);
      if (!problem) return;
    } else {
      problem = conds.map((c) => `${c.type}=${c.status}${c.message ? ` (${c.message})` : ""}`).join(", ");
    }
    await sleep(100);
  }
  throw new Error(`CRD ${name} was not Established and served within ${timeoutMs / 1000} s: ${problem}`);
}

/** "" when every served version of the CRD can be listed, else why not. */
async function unlistableVersion(client: KubernetesObjectApi, crd: Crd): Promise<string> {
  const kind = crd.spec?.names?.kind ?? "";
  for (const v of crd.spec?.versions ?? []) {
    if (v.served === false) continue;
    try {
      await client.list(`${crd.spec?.group}/${v.name}`, kind);
    } catch (err) {
      return `listing ${kind} ${v.name}: ${errorText(err)}`;
    }
  }
  return "";
}

/** The project's own manifests (generated from the Helm chart): every *.yaml under deploy/crds/ and deploy/rbac/ that exists. */
export function defaultManifestFiles(repoRoot: string): string[] {
  return ["deploy/crds", "deploy/rbac"].flatMap((rel) => {
    const dir = join(repoRoot, rel);
    if (!existsSync(dir)) return [];
    return readdirSync(dir, { recursive: true, encoding: "utf8" })
      .filter((f) => f.endsWith(".yaml"))
      .sort()
      .map((f) => join(dir, f));
  });
}

function errorText(err: unknown): string {
  if (err && typeof err === "object" && "body" in err && typeof err.body === "string") return err.body;
  return err instanceof Error ? err.message : String(err);
}
