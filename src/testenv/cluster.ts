/**
 * The real test cluster (scripts/cluster/cluster.sh) from TypeScript: bring it up and down,
 * load images, run kubectl and helm against it, and find a pod's JVM among the host's processes
 * — the nodes are namespaces of this machine, so a pod's process is a process here.
 */
import { execFile, spawn } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { buildImage } from "../../scripts/image/build.ts";
import { hitRate, readClassCounts } from "../jvm/hsperf.ts";
import { PORTS } from "../operator/constants.ts";
import { buildTestImage, type TestImage } from "./images.ts";
import { ensureClusterBinaries, ensureHelm, REPO_ROOT } from "./testenv.ts";

const run = promisify(execFile);
const SCRIPT = join(REPO_ROOT, "scripts/cluster/cluster.sh");

export interface Cluster {
  dir: string;
  kubeconfig: string;
  nodes: number;
  kubectl(args: string[], opts?: { input?: string; timeoutMs?: number }): Promise<string>;
  helm(args: string[]): Promise<string>;
  /** Node N's /var/lib as the node's pods see it (the store is its classcache/). */
  varLib(node: number): string;
  images(archives: string[]): Promise<void>;
  down(): Promise<void>;
}

function script(args: string[], log: (l: string) => void): Promise<void> {
  return new Promise((res, rej) => {
    const child = spawn("bash", [SCRIPT, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    const tail: string[] = [];
    const onData = (b: Buffer): void => {
      for (const l of b.toString().split("\n").filter(Boolean)) {
        tail.push(l);
        if (tail.length > 40) tail.shift();
        log(l);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", rej);
    child.on("close", (code) => (code === 0 ? res() : rej(new Error(`cluster.sh ${args.join(" ")} failed (exit ${code}):\n${tail.join("\n")}`))));
  });
}

export async function clusterUp(dir: string, opts: { nodes?: number; log?: (l: string) => void } = {}): Promise<Cluster> {
  const log = opts.log ?? (() => {});
  const nodes = opts.nodes ?? 2;
  await script(["up", dir, "--nodes", String(nodes)], log);
  return attach(dir, nodes, log);
}

export async function attach(dir: string, nodes: number, log: (l: string) => void = () => {}): Promise<Cluster> {
  const bin = await ensureClusterBinaries(log);
  const kubeconfig = join(dir, "kubeconfig");
  const helmPath = await ensureHelm(log);
  const kubectl = (args: string[], o: { input?: string; timeoutMs?: number } = {}): Promise<string> =>
    new Promise((res, rej) => {
      const child = execFile(join(bin, "kubectl"), ["--kubeconfig", kubeconfig, ...args], { maxBuffer: 64 << 20, timeout: o.timeoutMs ?? 120_000 }, (err, stdout, stderr) =>
        err ? rej(new Error(`kubectl ${args.join(" ")}: ${stderr || err.message}`)) : res(stdout),
      );
      if (o.input !== undefined) child.stdin!.end(o.input);
    });
  return {
    dir,
    kubeconfig,
    nodes,
    kubectl,
    helm: async (args) => (await run(helmPath, [...args, "--kubeconfig", kubeconfig], { maxBuffer: 16 << 20, env: { ...process.env, HELM_CACHE_HOME: join(dir, "helm-cache"), HELM_CONFIG_HOME: join(dir, "helm-config"), HELM_DATA_HOME: join(dir, "helm-data"), KUBECACHEDIR: join(dir, "kube-cache") } })).stdout,
    varLib: (n) => join(dir, "nodes", String(n), "var-lib"),
    images: (archives) => script(["images", dir, ...archives], log),
    down: () => script(["down", dir], log),
  };
}

/** Builds the classcache image and the test images the cluster tier uses into `dir` (reused when present). */
export async function buildImages(dir: string, kinds: TestImage[]): Promise<Record<TestImage | "classcache", string>> {
  mkdirSync(dir, { recursive: true });
  const out = {} as Record<TestImage | "classcache", string>;
  out.classcache = join(dir, "classcache.oci.tar");
  if (!existsSync(out.classcache)) await buildImage({ out: out.classcache });
  for (const k of kinds) {
    out[k] = join(dir, `${k}.oci.tar`);
    if (!existsSync(out[k])) await buildTestImage(k, out[k]);
  }
  return out;
}

/** The host PIDs of a pod's processes (their cgroup path names the pod's UID). */
export async function podPids(podUid: string): Promise<number[]> {
  const needle = `pod${podUid}`;
  const pids: number[] = [];
  for (const d of await readdir("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    const cg = await readFile(`/proc/${d}/cgroup`, "utf8").catch(() => "");
    if (cg.includes(needle)) pids.push(Number(d));
  }
  return pids;
}

/** The host PID of the pod's JVM, and its PID inside the pod (the name of its hsperfdata file). */
export async function podJvm(podUid: string): Promise<{ pid: number; nsPid: number } | undefined> {
  for (const pid of await podPids(podUid)) {
    const exe = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (!/(^|\/)java\0/.test(exe)) continue;
    const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
    const ns = /^NSpid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/).at(-1);
    return { pid, nsPid: Number(ns ?? pid) };
  }
  return undefined;
}

/** The share of the pod's JVM's classes loaded from an archive (its perf counters, read from the host); undefined without a JVM. */
export async function podHitRate(podUid: string): Promise<{ pid: number; hitRate: number } | undefined> {
  const jvm = await podJvm(podUid);
  const counts = jvm ? await readClassCounts(jvm.nsPid, `/proc/${jvm.pid}/root/tmp`) : undefined;
  return jvm && counts ? { pid: jvm.pid, hitRate: hitRate(counts) } : undefined;
}

/** The archive file of `key` in node N's store (the host path its pods map); without a key, the node's only one. */
export async function nodeArchive(c: Cluster, node: number, key?: string): Promise<string> {
  const store = join(c.varLib(node), "classcache");
  const manifests = key ? [`${key}.json`] : (await readdir(join(store, "manifests"))).filter((f) => f.endsWith(".json"));
  if (manifests.length !== 1) throw new Error(`node ${node} holds ${manifests.length} archives, not one: ${manifests.join(", ")}`);
  const m = JSON.parse(await readFile(join(store, "manifests", manifests[0]!), "utf8")) as { archive: { file: string } };
  return join(store, m.archive.file);
}

/** Archives the node agents pulled from peers, summed over the agents (their metrics). */
export async function peerPulls(c: Cluster): Promise<number> {
  const agents = JSON.parse(await c.kubectl(["-n", "classcache-system", "get", "pods", "-l", "app.kubernetes.io/component=agent", "-o", "json"])) as { items: { status: { podIP?: string } }[] };
  let pulls = 0;
  for (const a of agents.items) {
    const m = await clusterFetch(c, `http://${a.status.podIP}:${PORTS.metrics}/metrics`);
    if (!("body" in m)) throw new Error(`agent ${a.status.podIP}: ${m.error}`);
    pulls += Number(/^classcache_archive_pulls_total\{result="ok"\} (\d+)/m.exec(m.body)?.[1] ?? 0);
  }
  return pulls;
}

/** The prefix of the cluster's network namespaces, cgroups and run dir (cluster.sh's `<p>`). */
export async function clusterPrefix(c: Cluster): Promise<string> {
  return (await readFile(join(c.dir, "cp-netns"), "utf8")).trim().replace(/cp$/, "");
}

/**
 * An HTTP GET from inside the cluster's network (the control plane's namespace routes to every
 * node's pods): status, headers and body, or the error.
 */
export async function clusterFetch(c: Cluster, url: string, timeoutMs = 10_000): Promise<{ status: number; headers: Record<string, string>; body: string } | { error: string }> {
  const ns = `${await clusterPrefix(c)}cp`;
  const script = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(${timeoutMs}) }).then(async (r) => console.log(JSON.stringify({ status: r.status, headers: Object.fromEntries(r.headers), body: await r.text() })), (e) => console.log(JSON.stringify({ error: String(e.cause?.code ?? e.message) })))`;
  const { stdout } = await run("nsenter", [`--net=/run/netns/${ns}`, process.execPath, "-e", script], { timeout: timeoutMs + 5000, maxBuffer: 16 << 20 });
  return JSON.parse(stdout) as { status: number; headers: Record<string, string>; body: string } | { error: string };
}

/**
 * What a cluster left on the machine after `down`: its network namespaces, cgroups, mounts,
 * processes, run dir and cluster dir, and /run/netns if it was not a mount before (`netnsMountBefore`,
 * runNetnsMounted before up). Empty when it left nothing. `prefix`: clusterPrefix, read before down.
 */
export async function leftovers(dir: string, prefix: string, netnsMountBefore?: boolean): Promise<string[]> {
  const found: string[] = [];
  const netns = await readdir("/run/netns").catch(() => [] as string[]);
  found.push(...netns.filter((n) => n.startsWith(prefix)).map((n) => `network namespace ${n}`));
  for (const ctl of await readdir("/sys/fs/cgroup").catch(() => [] as string[])) {
    const left = (await readdir(join("/sys/fs/cgroup", ctl)).catch(() => [] as string[])).filter((d) => d.startsWith(`${prefix}-`));
    found.push(...left.map((d) => `cgroup ${ctl}/${d}`));
  }
  const mounts = await readFile("/proc/self/mountinfo", "utf8");
  found.push(...mounts.split("\n").filter((l) => l.includes(dir) || l.includes(`/run/${prefix}`)).map((l) => `mount ${l.split(" ")[4]}`));
  for (const p of await readdir("/proc")) {
    if (!/^\d+$/.test(p)) continue;
    const cmd = (await readFile(`/proc/${p}/cmdline`, "utf8").catch(() => "")).replaceAll("\0", " ");
    if (cmd.includes(dir) || cmd.includes(`/run/${prefix}/`) || cmd.includes(`/run/netns/${prefix}`)) found.push(`process ${p}: ${cmd.slice(0, 120)}`);
  }
  if (existsSync(`/run/${prefix}`)) found.push(`/run/${prefix}`);
  if (netnsMountBefore !== undefined && (await runNetnsMounted()) !== netnsMountBefore) found.push("/run/netns is a mount (ip netns made it; the host had none)");
  if (existsSync(dir)) found.push(dir);
  return found;
}

/** Is /run/netns a mount point (ip netns makes it one)? */
export async function runNetnsMounted(): Promise<boolean> {
  const mounts = await readFile("/proc/self/mountinfo", "utf8");
  return mounts.split("\n").some((l) => l.split(" ")[4] === "/run/netns");
}
