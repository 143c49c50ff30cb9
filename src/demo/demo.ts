/**
 * `classcache demo`: the whole story on one machine. One directory (embedded, or a real
 * Valkey), N node agents as separate processes on their own loopback addresses and stores,
 * all asking for the same key at once: one builds, the others pull peer-to-peer. Then M JVMs
 * per node boot from the archive their node pulled, against a baseline without it, and the
 * archive's memory sharing is read from /proc/<pid>/smaps.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { generateSigningKey, trustStoreFromPems } from "../archive/signing.ts";
import { BOOT_STARTED } from "../build/train.ts";
import type { Directory, DirectoryEvent } from "../directory/directory.ts";
import { serveEmbeddedDirectory } from "../directory/embedded.ts";
import { openDirectory } from "../directory/open.ts";
import { hitRate, readClassCounts } from "../jvm/hsperf.ts";
import { capabilities, probeJdk, resolveJavaHome } from "../jvm/jdk.ts";
import { cleanJvmEnv, freePort, viewCommand } from "../jvm/launch.ts";
import { JvmProcess, ProcessError } from "../jvm/process.ts";
import { ClasscacheError } from "../runtime/errors.ts";
import { collectStats, type Stats } from "../stats/stats.ts";
import { demoAppJar, referenceAgentJar, REPO } from "./fixtures.ts";
import { nodeMemory, type NodeMemory } from "./memory.ts";
import { median } from "../util/format.ts";

export interface DemoOptions {
  nodes: number;
  jvmsPerNode: number;
  java: string | undefined;
  /** A Valkey/Redis URL; the embedded directory when absent. */
  directory: string | undefined;
  baselineRuns: number;
  timeoutMs: number;
}

export interface DemoNode {
  name: string;
  zone: string;
  address: string;
  store: string;
  source: "built" | "pulled" | "local";
  from: string[];
  ensureMs: number;
}

export interface DemoJvm {
  node: string;
  name: string;
  readyMs: number;
  hitRate: number;
  instrumented: boolean;
}

export interface DemoResult {
  jdk: { version: string; feature: number; kind: "cds" | "aot" };
  directory: string;
  archive: { key: string; sizeBytes: number; hitRate: number; mode: string; instrumented: boolean | null; builtBy: string; buildMs: number };
  nodes: DemoNode[];
  builds: number;
  pulls: number;
  events: DirectoryEvent[];
  baseline: { readyMs: number; runs: number[]; what: string };
  jvms: DemoJvm[];
  memory: NodeMemory[];
  total: Omit<NodeMemory, "node" | "usage" | "idealRoRatio"> & { idealRoRatio: number };
  /** What `classcache stats` shows from the directory once every agent announced its JVMs. */
  stats: Stats;
}

interface Running {
  name: string;
  child: ChildProcess;
}

const ROOT = "/var/lib/classcache";

export async function runDemo(o: DemoOptions, progress: (msg: string) => void, signal: AbortSignal): Promise<DemoResult> {
  const t0 = performance.now();
  const say = (m: string) => progress(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${m}`);
  const home = await resolveJavaHome(o.java);
  const jdk = await probeJdk(home);
  // JDKs before 19 only use an archive where the JVM sees the store at the path it was built
  // with: every simulated node mounts its store at one path, as a container would.
  const relocatable = capabilities(jdk.feature).relocatableClassPath;
  if (!relocatable && process.getuid?.() !== 0) {
    throw new ClasscacheError("input", `the demo on JDK ${jdk.feature} simulates each node's container mount of its store and needs root`, {
      hint: "run it as root, or pass --java with a JDK 19+ (e.g. 25), which relocates class paths by itself",
    });
  }
  say("building the demo app and the reference agent (Maven; cached after the first run)…");
  const [app, agent] = await Promise.all([demoAppJar(), referenceAgentJar()]);
  const work = await mkdtemp(join(tmpdir(), "classcache-demo-"));
  const token = randomBytes(24).toString("hex");
  const key = generateSigningKey();
  await writeFile(join(work, "token"), token, { mode: 0o600 });
  await writeFile(join(work, "signing.key"), key.privatePem, { mode: 0o600 });
  await writeFile(join(work, "signing.pub"), key.publicPem);
  const running: Running[] = [];
  const jvms: JvmProcess[] = [];
  let embedded: Awaited<ReturnType<typeof serveEmbeddedDirectory>> | undefined;
  try {
    let directoryUrl = o.directory;
    if (!directoryUrl) {
      embedded = await serveEmbeddedDirectory({ host: "127.0.0.1", token });
      directoryUrl = embedded.url;
    }
    say(`starting ${o.nodes} node agents (directory: ${o.directory ? redact(o.directory) : "embedded"})…`);
    const nodes: DemoNode[] = [];
    for (let i = 0; i < o.nodes; i++) {
      const name = `node-${i}`;
      const address = `127.0.0.${11 + i}`;
      const store = join(work, name, "store");
      await mkdir(store, { recursive: true });
      nodes.push({ name, zone: i % 2 === 0 ? "zone-a" : "zone-b", address, store, source: "local", from: [], ensureMs: 0 });
      running.push(startNode(name, nodes[i]!, directoryUrl, work, relocatable ? store : ROOT, home));
    }
    await Promise.all(nodes.map((n) => waitHttp(`http://${n.address}:7071/readyz`, 60_000, signal)));
    say(`all ${o.nodes} nodes ask for the archive at the same moment…`);
    const spec = { app, appArgs: [], jvmOptions: [], java: home, agent, profile: "reference", training: { warmupUrls: [], timeoutMs: o.timeoutMs } };
    const ensures = await Promise.all(nodes.map((n) => ensure(n, token, spec, signal)));
    ensures.forEach((r, i) => Object.assign(nodes[i]!, { source: r.source, from: r.from, ensureMs: r.ms }));
    const builder = nodes.find((n) => n.source === "built");
    const first = ensures[0]!;
    say(`1 archive: built by ${builder?.name ?? "?"}, pulled by ${nodes.filter((n) => n.source === "pulled").length} nodes`);

    say(`baseline: the fat jar with the agent and no archive (${o.baselineRuns} runs)…`);
    const java = join(home, "bin", "java");
    const baselineRuns = await measureBaseline(java, app, agent, o);
    say(`booting ${o.jvmsPerNode} JVMs on each node from the archive it holds…`);
    const { results, pidsByNode } = await bootJvms(java, nodes, ensures, relocatable, work, o, jvms, say);
    say("reading /proc/<pid>/smaps…");
    const memory: NodeMemory[] = [];
    for (const [i, n] of nodes.entries()) memory.push(await nodeMemory(n.name, ensures[i]!.archive, pidsByNode.get(n.name) ?? []));
    say("waiting for the agents to announce their JVMs: what `classcache stats` shows…");
    const stats = await announcedStats(embedded?.directory ?? openDirectory(directoryUrl, { token }), key.publicPem, results.length, !embedded);
    const events = embedded ? (await embedded.directory.readEvents("0", 0)).map((e) => e.event) : [];
    return {
      jdk: { version: jdk.runtimeVersion, feature: jdk.feature, kind: first.kind },
      directory: o.directory ? redact(o.directory) : "embedded",
      archive: { key: first.key, sizeBytes: first.size, hitRate: first.hitRate, mode: first.mode, instrumented: first.instrumented, builtBy: builder?.name ?? "", buildMs: builder?.ensureMs ?? 0 },
      nodes,
      builds: nodes.filter((n) => n.source === "built").length,
      pulls: nodes.filter((n) => n.source === "pulled").length,
      events,
      baseline: { readyMs: Math.round(median(baselineRuns)), runs: baselineRuns, what: "fat jar with -javaagent, no archive" },
      jvms: results,
      memory,
      total: totalMemory(memory, o.jvmsPerNode),
      stats,
    };
  } finally {
    await Promise.all(jvms.map((p) => p.stop(5_000)));
    for (const r of running) r.child.kill("SIGTERM");
    await Promise.all(running.map((r) => (r.child.exitCode === null ? new Promise((res) => r.child.once("exit", res)) : Promise.resolve())));
    await embedded?.close();
    await rm(work, { recursive: true, force: true });
  }
}

async function measureBaseline(java: string, app: string, agent: string, o: DemoOptions): Promise<number[]> {
  const runs: number[] = [];
  for (let i = 0; i < o.baselineRuns; i++) {
    const port = await freePort();
    const p = JvmProcess.start({ command: java, args: [`-Dserver.port=${port}`, `-javaagent:${agent}`, "-jar", app], env: cleanJvmEnv() });
    try {
      runs.push(Math.round((await p.waitForLine(BOOT_STARTED, o.timeoutMs)).ms));
    } finally {
      await p.stop();
    }
  }
  return runs;
}

/** Boots the JVMs one at a time (so each start is timed alone) and keeps them running for the memory reading. */
async function bootJvms(
  java: string,
  nodes: DemoNode[],
  ensures: EnsureResponse[],
  relocatable: boolean,
  work: string,
  o: DemoOptions,
  jvms: JvmProcess[],
  say: (m: string) => void,
): Promise<{ results: DemoJvm[]; pidsByNode: Map<string, number[]> }> {
  const results: DemoJvm[] = [];
  const pidsByNode = new Map<string, number[]>();
  for (const [i, n] of nodes.entries()) {
    const r = ensures[i]!;
    for (let j = 0; j < o.jvmsPerNode; j++) {
      const port = await freePort();
      const cmd = viewCommand(java, [`-Dserver.port=${port}`, ...r.launch], { store: n.store, root: relocatable ? n.store : ROOT, readOnly: true });
      const p = JvmProcess.start({ command: cmd.command, args: cmd.args, env: cleanJvmEnv({ JAVA_TOOL_OPTIONS: r.javaToolOptions }), logFile: join(work, n.name, `jvm-${j}.log`) });
      jvms.push(p);
      const ready = await p.waitForLine(BOOT_STARTED, o.timeoutMs).catch((err: unknown) => {
        throw new ClasscacheError("internal", `${n.name}/jvm-${j} did not start from the archive: ${(err as Error).message}`, { details: err instanceof ProcessError ? err.tail : undefined });
      });
      const counts = await readClassCounts(p.pid);
      // The reference agent's header proves its baked instrumentation ran in this JVM.
      const res = await fetch(`http://127.0.0.1:${port}/api/owners`);
      await res.arrayBuffer();
      results.push({
        node: n.name,
        name: `${n.name}/jvm-${j}`,
        readyMs: Math.round(ready.ms),
        hitRate: counts ? Math.round(hitRate(counts) * 10000) / 10000 : 0,
        instrumented: res.headers.get("x-reference-agent-requests") === "1",
      });
      pidsByNode.set(n.name, [...(pidsByNode.get(n.name) ?? []), p.pid]);
      say(`  ${n.name}/jvm-${j} ready in ${Math.round(ready.ms)} ms`);
    }
  }
  return { results, pidsByNode };
}

/** The directory's view, once the agents' heartbeats count all `jvms` (or after 30 s, as it is then). */
async function announcedStats(directory: Directory, publicPem: string, jvms: number, close: boolean): Promise<Stats> {
  const trust = trustStoreFromPems([publicPem]);
  try {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const s = await collectStats({ directory, trust });
      if (s.archives.reduce((a, x) => a + x.jvms, 0) >= jvms || Date.now() > deadline) return s;
      await sleep(500);
    }
  } finally {
    if (close) await directory.close();
  }
}

function startNode(name: string, n: DemoNode, directory: string, work: string, root: string, jdk: string): Running {
  const args = [
    join(REPO, "src", "cli.ts"),
    "node",
    "--name", name,
    "--zone", n.zone,
    "--store", n.store,
    "--root", root,
    "--listen", `${n.address}:7071`,
    "--api", `${n.address}:7072`,
    "--directory", directory,
    "--token-file", join(work, "token"),
    "--signing-key", join(work, "signing.key"),
    "--trust", join(work, "signing.pub"),
    // The one JDK a build asked of this node may use: the local API never takes a java path of its own.
    "--jdk", jdk,
    // Announce holdings and the JVMs using them every 2 s, so the stats screen fills quickly.
    "--heartbeat", "2",
  ];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  const log = createWriteStream(join(work, name, "agent.log"));
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  return { name, child };
}

interface EnsureResponse {
  key: string;
  source: "built" | "pulled" | "local";
  from: string[];
  ms: number;
  archive: string;
  javaToolOptions: string;
  launch: string[];
  hitRate: number;
  kind: "cds" | "aot";
  size: number;
  mode: string;
  instrumented: boolean | null;
}

async function ensure(n: DemoNode, token: string, build: unknown, signal: AbortSignal): Promise<EnsureResponse> {
  const res = await fetch(`http://${n.address}:7072/v1/ensure`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ build, shareMemory: true }),
    signal,
  });
  const body = (await res.json()) as EnsureResponse & { error?: string; hint?: string };
  if (!res.ok) throw new ClasscacheError("internal", `${n.name} could not ensure the archive: ${body.error}`, { hint: body.hint });
  return body;
}

async function waitHttp(url: string, ms: number, signal: AbortSignal): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    signal.throwIfAborted();
    try {
      const r = await fetch(url);
      if (r.ok) return;
    } catch {
      /* not yet */
    }
    await sleep(100);
  }
  throw new ClasscacheError("internal", `${url} did not become ready in ${ms / 1000} s`);
}

function totalMemory(ms: NodeMemory[], perNode: number): DemoResult["total"] {
  const sum = (f: (m: NodeMemory) => number) => ms.reduce((a, m) => a + f(m), 0);
  const r = (p: number, q: number) => (q === 0 ? 0 : Math.round((p / q) * 1000) / 1000);
  const ro = { p: sum((m) => m.usage.ro.pssKb), r: sum((m) => m.usage.ro.rssKb) };
  const rw = { p: sum((m) => m.usage.rw.pssKb), r: sum((m) => m.usage.rw.rssKb) };
  return {
    jvms: sum((m) => m.jvms),
    rssKb: sum((m) => m.rssKb),
    pssKb: sum((m) => m.pssKb),
    savedKb: sum((m) => m.savedKb),
    sharedCleanKb: sum((m) => m.sharedCleanKb),
    pssRssRatio: r(sum((m) => m.pssKb), sum((m) => m.rssKb)),
    roPssRssRatio: r(ro.p, ro.r),
    rwPssRssRatio: r(rw.p, rw.r),
    idealRoRatio: Math.round((1 / perNode) * 1000) / 1000,
  };
}

function redact(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, "//***@");
}
