/** `classcache demo`: the whole story on one machine, on one screen. */
import { runDemo, type DemoResult } from "../demo/demo.ts";
import { usageError } from "../runtime/errors.ts";
import { renderStats } from "../stats/stats.ts";
import { table } from "../util/format.ts";
import { parse, type Command } from "./command.ts";

const usage = `
usage: classcache demo [--nodes N] [--jvms-per-node M] [--java <JAVA_HOME>] [--directory redis://…] [--json]

Builds the demo app's archive once with the reference agent baked in, starts N simulated nodes
(each its own agent process, loopback address and store), lets them all ask for the key at the
same moment — one builds, the others pull peer-to-peer — boots M JVMs per node from the
archive it pulled, and prints where the archive is, who pulled from whom, each JVM's
time-to-ready against a baseline without the archive, and the archive's memory sharing per
node from /proc/<pid>/smaps.

  --nodes N            simulated nodes (default 4)
  --jvms-per-node M    JVMs booted on each node (default 2)
  --java <JAVA_HOME>   the JDK (default: $JAVA_HOME, then java on PATH)
  --directory <url>    a Valkey/Redis directory (redis://:password@host:port); default: embedded
  --baseline-runs K    runs of the fat jar without the archive (default 2)
  --timeout <seconds>  deadline for each JVM (default 300)
  --json               print the result as JSON on stdout
`;

export const demoCommand: Command = {
  name: "demo",
  summary: "the whole story on one machine: build once, pull peer-to-peer, boot from the archive",
  usage,
  async run(argv, io) {
    const { values } = parse("demo", argv, {
      nodes: { type: "string", default: "4" },
      "jvms-per-node": { type: "string", default: "2" },
      java: { type: "string" },
      directory: { type: "string" },
      "baseline-runs": { type: "string", default: "2" },
      timeout: { type: "string", default: "300" },
      json: { type: "boolean" },
    });
    const int = (name: string, v: string, min: number, max: number) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < min || n > max) throw usageError(`--${name} must be a whole number from ${min} to ${max}`);
      return n;
    };
    const result = await runDemo(
      {
        nodes: int("nodes", values.nodes, 1, 64),
        jvmsPerNode: int("jvms-per-node", values["jvms-per-node"], 1, 16),
        java: values.java,
        directory: values.directory,
        baselineRuns: int("baseline-runs", values["baseline-runs"], 1, 20),
        timeoutMs: int("timeout", values.timeout, 1, 3600) * 1000,
      },
      (m) => io.stderr.write(m + "\n"),
      io.signal,
    );
    io.stdout.write(values.json ? JSON.stringify(result, null, 2) + "\n" : screen(result));
    return 0;
  },
};

const mib = (kb: number) => (kb / 1024).toFixed(1);
const pct = (x: number) => `${(x * 100).toFixed(1)} %`;


export function screen(r: DemoResult): string {
  const a = r.archive;
  const out: string[] = [];
  out.push(`classcache demo — ${r.nodes.length} nodes × ${r.memory[0]?.jvms ?? 0} JVMs, JDK ${r.jdk.version} (${r.jdk.kind === "aot" ? "AOT cache" : "dynamic CDS"}), directory: ${r.directory}`);
  out.push("");
  out.push(`ARCHIVE ${a.key.slice(0, 12)}  ${(a.sizeBytes / 1048576).toFixed(1)} MiB  mode ${a.mode}  verified hit rate ${pct(a.hitRate)}  instrumentation ${a.instrumented ? "fired with the agent off" : "NOT proven"}`);
  out.push(`        built once, by ${a.builtBy} (${(a.buildMs / 1000).toFixed(1)} s); ${r.builds} build, ${r.pulls} verified pulls`);
  out.push("");
  out.push(
    ...table(
      ["NODE", "ZONE", "GOT IT BY", "FROM", "IN"],
      r.nodes.map((n) => [n.name, n.zone, n.source === "built" ? "building" : n.source === "pulled" ? "pulling" : n.source, n.from.join(",") || "—", `${(n.ensureMs / 1000).toFixed(1)} s`]),
    ),
  );
  out.push("");
  const base = r.baseline.readyMs;
  out.push(
    ...table(
      ["JVM", "READY ms", "× BASELINE", "HIT RATE", "AGENT FIRED"],
      r.jvms.map((j) => [j.name, String(j.readyMs), (j.readyMs / base).toFixed(2), pct(j.hitRate), j.instrumented ? "yes" : "no"]),
    ),
  );
  out.push(`baseline: ${r.baseline.what}: ${base} ms (median of ${r.baseline.runs.length})`);
  out.push("");
  out.push("MEMORY — the archive's own mappings only (from /proc/<pid>/smaps; the JDK's classes.jsa is not counted)");
  const row = (name: string, m: Omit<DemoResult["memory"][number], "node" | "usage">) => [
    name,
    String(m.jvms),
    mib(m.rssKb),
    mib(m.pssKb),
    mib(m.savedKb),
    mib(m.sharedCleanKb),
    m.pssRssRatio.toFixed(2),
    `${m.roPssRssRatio.toFixed(2)} (${m.idealRoRatio.toFixed(2)})`,
    m.rwPssRssRatio.toFixed(2),
  ];
  out.push(
    ...table(
      ["NODE", "JVMS", "ΣRSS MiB", "ΣPSS MiB", "SAVED MiB", "SHARED_CLEAN MiB", "PSS/RSS", "RO PSS/RSS (IDEAL)", "RW PSS/RSS"],
      [...r.memory.map((m) => row(m.node, m)), row("total", r.total)],
    ),
  );
  out.push("");
  out.push("RO: the archive's read-only part, shared by every JVM on the node (ideal 1/JVMs). RW: its writable part, which each JVM dirties, so private.");
  out.push("");
  out.push("What `classcache stats` shows a platform team, from what the node agents announce to the directory:");
  out.push(renderStats(r.stats, `directory ${r.directory}`).trimEnd());
  return out.join("\n") + "\n";
}
