/**
 * `npm run bench:distribution`: both distribution benchmarks in one run, with medians, ratios
 * and the issue's two criteria.
 *
 *   1. pull   (bench/distribution-pull.ts): one pull of a random blob between two processes on
 *      loopback with `pullBlob` (token, metering, sha256 verification) against a plain
 *      `node:http` server serving the same file in the same run. Criterion: the pull's
 *      throughput ≥ 0.8× the plain one (ratio of medians).
 *   2. fanout (bench/distribution-fanout.ts): N node agents ask for a fresh key at once, one
 *      build, the rest pulled peer-to-peer; repeated. Criteria, in every repeat: builds = 1, and
 *      the most copies (archive + layout) any one node served ≤ 2× the per-node upload cap.
 *
 *   npm run bench:distribution -- [--part all|pull|fanout] [--runs 5] [--size-mib 100]
 *                                 [--repeats 3] [--nodes 32] [--upload-cap 4] [--java <JAVA_HOME>]
 *                                 [--json out.json]
 *
 * Each part runs in its own process (one after the other, never at once); their progress goes
 * to stderr, the summary to stdout. Exits 1 when a criterion is not met.
 */
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { median } from "../src/util/format.ts";

const { values } = parseArgs({
  options: {
    part: { type: "string", default: "all" },
    runs: { type: "string", default: "5" },
    "size-mib": { type: "string", default: "100" },
    repeats: { type: "string", default: "3" },
    nodes: { type: "string", default: "32" },
    "upload-cap": { type: "string", default: "4" },
    java: { type: "string" },
    json: { type: "string" },
  },
});
if (!["all", "pull", "fanout"].includes(values.part)) throw new Error(`--part must be all, pull or fanout, not ${values.part}`);
const repeats = Number(values.repeats);
const cap = Number(values["upload-cap"]);

interface PullResult {
  sizeBytes: number;
  runs: number;
  samples: { pull: number[]; plain: number[] };
  pullMs: number;
  plainMs: number;
  ratio: number;
}

interface FanoutResult {
  date: string;
  nodes: number;
  uploadCap: number;
  builds: number;
  wallMs: number;
  buildMs: number;
  distributeMs: number;
  archiveMiB: number;
  copyMiB: number;
  maxPeakConcurrentUploads: number;
  maxCopiesServed: number;
  builderCopiesServed: number;
  withinTwiceCap: boolean;
  nodesServing: number;
}

/** Runs one benchmark script in its own process; its stdout and stderr go to our stderr. */
async function run(script: string, args: string[], json: string): Promise<unknown> {
  const child = spawn(process.execPath, [join(import.meta.dirname, script), ...args, "--json", json], { stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.pipe(process.stderr, { end: false });
  child.stderr.pipe(process.stderr, { end: false });
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  if (code !== 0) throw new Error(`${script} exited with ${code}`);
  return JSON.parse(await readFile(json, "utf8"));
}

const s1 = (ms: number) => (ms / 1000).toFixed(1);

async function main(): Promise<number> {
  const work = await mkdtemp(join(tmpdir(), "classcache-bench-distribution-"));
  const out: string[] = [];
  const summary: { date: string; machine: string; pull?: unknown; fanout?: unknown } = { date: new Date().toISOString(), machine: `${(await import("node:os")).cpus().length} cores` };
  let ok = true;
  try {
    if (values.part !== "fanout") {
      process.stderr.write(`\n== pull: ${values["size-mib"]} MiB, ${values.runs} runs each ==\n`);
      const r = (await run("distribution-pull.ts", ["--runs", values.runs, "--size-mib", values["size-mib"]], join(work, "pull.json"))) as PullResult;
      const mib = r.sizeBytes / 1048576;
      const met = r.ratio >= 0.8;
      ok &&= met;
      out.push(
        `PULL — ${mib} MiB between two processes on loopback, median of ${r.runs} interleaved runs each`,
        "",
        "| transfer | median ms | MiB/s | runs (ms) |",
        "| --- | --- | --- | --- |",
        `| plain node:http → fetch into a file (baseline) | ${Math.round(r.plainMs)} | ${(mib / (r.plainMs / 1000)).toFixed(0)} | ${r.samples.plain.map(Math.round).join(", ")} |`,
        `| classcache pullBlob (token, sha256 verified) | ${Math.round(r.pullMs)} | ${(mib / (r.pullMs / 1000)).toFixed(0)} | ${r.samples.pull.map(Math.round).join(", ")} |`,
        "",
        `ratio (pull throughput / plain): ${r.ratio.toFixed(2)}× — target ≥ 0.80×: ${met ? "met" : "NOT met"}`,
        "",
      );
      summary.pull = { ...r, met };
    }
    if (values.part !== "pull") {
      const rs: FanoutResult[] = [];
      for (let i = 0; i < repeats; i++) {
        process.stderr.write(`\n== fan-out ${i + 1}/${repeats}: ${values.nodes} nodes, upload cap ${cap} ==\n`);
        const args = ["--nodes", values.nodes, "--upload-cap", String(cap), ...(values.java ? ["--java", values.java] : [])];
        rs.push((await run("distribution-fanout.ts", args, join(work, `fanout-${i}.json`))) as FanoutResult);
      }
      const buildsMet = rs.every((r) => r.builds === 1);
      const copiesMet = rs.every((r) => r.maxCopiesServed <= 2 * cap);
      ok &&= buildsMet && copiesMet;
      const row = (name: string, f: (r: FanoutResult) => number, fmt: (x: number) => string) => `| ${name} | ${rs.map((r) => fmt(f(r))).join(" | ")} | ${fmt(median(rs.map(f)))} |`;
      out.push(
        `FAN-OUT — ${values.nodes} node agents (own processes, loopback addresses, stores; Redis directory), upload cap ${cap}, ${rs.length} repeat${rs.length === 1 ? "" : "s"}`,
        "",
        `| | ${rs.map((_, i) => `run ${i + 1}`).join(" | ")} | median |`,
        `| --- | ${rs.map(() => "---").join(" | ")} | --- |`,
        row("builds", (r) => r.builds, String),
        row("wall time to all verified (s)", (r) => r.wallMs, s1),
        row("of which the build (s)", (r) => r.buildMs, s1),
        row("distribution after the build (s)", (r) => r.distributeMs, s1),
        row("wall time / build time", (r) => r.wallMs / r.buildMs, (x) => x.toFixed(2)),
        row("archive + layout (MiB)", (r) => r.copyMiB, (x) => x.toFixed(1)),
        row("bytes pulled / distribution time (MiB/s)", (r) => ((r.nodes - 1) * r.copyMiB) / (r.distributeMs / 1000), (x) => x.toFixed(0)),
        row("most copies one node served", (r) => r.maxCopiesServed, (x) => x.toFixed(1)),
        row("copies the builder served", (r) => r.builderCopiesServed, (x) => x.toFixed(1)),
        row("nodes that served bytes", (r) => r.nodesServing, String),
        row("max concurrent uploads on one node", (r) => r.maxPeakConcurrentUploads, String),
        "",
        `builds = 1 in every run: ${buildsMet ? "met" : "NOT met"}; most copies served by one node ≤ ${2 * cap} (2 × cap) in every run: ${copiesMet ? "met" : "NOT met"}`,
        "",
      );
      summary.fanout = { repeats: rs.length, runs: rs, buildsMet, copiesMet };
    }
    process.stdout.write(`\n${out.join("\n")}`);
    if (values.json) await writeFile(values.json, JSON.stringify(summary, null, 2) + "\n");
    return ok ? 0 : 1;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

process.exitCode = await main();
