/**
 * Distribution benchmark: one pull of a random blob from a peer server with `pullBlob`
 * (bearer token, metering, sha256 verification on) against fetching the same file from a plain
 * `node:http` file server into a file. Each server runs in its own process, as on another node;
 * runs are interleaved (alternating which goes first) after one warm-up of each.
 *
 *   node bench/distribution-pull.ts [--runs 5] [--size-mib 100] [--json out.json]
 *
 * Target: our pull's throughput at least 0.8× the plain transfer's.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createWriteStream } from "node:fs";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { parseArgs } from "node:util";
import { PeerMetrics } from "../src/p2p/metrics.ts";
import { servePlainFile } from "../src/p2p/plain.ts";
import { pullBlob, Quarantine } from "../src/p2p/puller.ts";
import { createPeerServer } from "../src/p2p/server.ts";
import { listen, mapSource, randomFile } from "../src/p2p/testing.ts";
import { discardLogger } from "../src/runtime/log.ts";
import { median } from "../src/util/format.ts";

const TOKEN = "bench-token";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "5" },
    "size-mib": { type: "string", default: "100" },
    json: { type: "string" },
    serve: { type: "string" },
    file: { type: "string" },
    sha256: { type: "string" },
  },
});

/** Child mode: serve the file and print the base URL. */
async function serve(kind: string, file: string, sha256: string): Promise<void> {
  if (kind === "plain") {
    const server = await servePlainFile(file, 0);
    const addr = server.address() as { port: number };
    console.log(`http://127.0.0.1:${addr.port}`);
  } else {
    const server = createPeerServer({ blobs: mapSource({ [sha256]: file }), token: TOKEN, uploadCap: 4, metrics: new PeerMetrics(), log: discardLogger });
    console.log(await listen(server));
  }
}

async function startServer(kind: string, file: string, sha256: string): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [import.meta.filename, "--serve", kind, "--file", file, "--sha256", sha256], { stdio: ["ignore", "pipe", "inherit"] });
  const lines = createInterface({ input: child.stdout });
  const [url] = (await once(lines, "line")) as [string];
  return { url, child };
}

async function plainFetch(url: string, dest: string): Promise<void> {
  const res = await fetch(url);
  if (res.status !== 200 || !res.body) throw new Error(`plain server answered ${res.status}`);
  await pipeline(Readable.fromWeb(res.body as WebReadableStream<Uint8Array>), createWriteStream(dest, { flags: "wx" }));
}

async function main(): Promise<void> {
  if (values.serve) return serve(values.serve, values.file!, values.sha256!);
  const runs = Number(values.runs);
  const size = Number(values["size-mib"]) * 1024 * 1024;
  const dir = await mkdtemp(join(tmpdir(), "classcache-bench-"));
  const children: ChildProcess[] = [];
  try {
    const file = join(dir, "blob");
    const sha256 = await randomFile(file, size);
    const peer = await startServer("peer", file, sha256);
    const plain = await startServer("plain", file, sha256);
    children.push(peer.child, plain.child);
    const holders = [{ node: "peer", url: peer.url, zone: "z" }];
    let n = 0;
    const timed = async (what: "pull" | "plain"): Promise<number> => {
      const dest = join(dir, `dest-${++n}`);
      const t0 = performance.now();
      if (what === "pull") await pullBlob({ sha256, size, holders, token: TOKEN, dest, quarantine: new Quarantine(), log: discardLogger });
      else await plainFetch(plain.url, dest);
      const ms = performance.now() - t0;
      if ((await stat(dest)).size !== size) throw new Error(`${what} wrote the wrong size`);
      await rm(dest);
      return ms;
    };
    await timed("plain"); // warm-up: page cache, JIT, connections
    await timed("pull");
    const samples = { pull: [] as number[], plain: [] as number[] };
    for (let i = 0; i < runs; i++) {
      const order: ("pull" | "plain")[] = i % 2 ? ["pull", "plain"] : ["plain", "pull"];
      for (const what of order) samples[what].push(await timed(what));
    }
    const pullMs = median(samples.pull);
    const plainMs = median(samples.plain);
    const mibps = (ms: number) => size / 1024 / 1024 / (ms / 1000);
    const ratio = plainMs / pullMs;
    const fmt = (xs: number[]) => xs.map((x) => Math.round(x)).join(", ");
    console.log(`blob: ${size / 1024 / 1024} MiB, ${runs} runs each, interleaved, after one warm-up each`);
    console.log(`pullBlob (peer server, token, sha256 verified): median ${Math.round(pullMs)} ms = ${mibps(pullMs).toFixed(0)} MiB/s  [${fmt(samples.pull)}]`);
    console.log(`plain node:http + fetch into a file:            median ${Math.round(plainMs)} ms = ${mibps(plainMs).toFixed(0)} MiB/s  [${fmt(samples.plain)}]`);
    console.log(`ratio (pull throughput / plain): ${ratio.toFixed(2)}× — target ≥ 0.80× ${ratio >= 0.8 ? "met" : "NOT met"}`);
    if (values.json) await writeFile(values.json, JSON.stringify({ sizeBytes: size, runs, samples, pullMs, plainMs, ratio }, null, 2) + "\n");
  } finally {
    for (const c of children) c.kill();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
