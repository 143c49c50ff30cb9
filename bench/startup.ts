/**
 * Startup benchmark: median time-to-ready of the Spring Boot demo app, per JDK, as a fat jar,
 * with an agent, and from classcache archives in each mode — all measured in the same run,
 * interleaved, so ratios compare like with like on a noisy machine.
 *
 *   npm run bench:startup -- [--runs 5] [--jdk 17,25] [--json out.json] [--no-otel]
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { Manifest } from "../src/archive/manifest.ts";
import { loadProfile } from "../src/archive/profile.ts";
import { buildArchive } from "../src/build/pipeline.ts";
import { BOOT_STARTED } from "../src/build/train.ts";
import { demoAppJar, otelAgentJar, referenceAgentJar } from "../src/demo/fixtures.ts";
import { findJdk } from "../src/jvm/jdk.ts";
import { cleanJvmEnv, fillRoot, freePort, launchArgs } from "../src/jvm/launch.ts";
import { toJavaToolOptions } from "../src/jvm/options.ts";
import { JvmProcess } from "../src/jvm/process.ts";
import { discardLogger } from "../src/runtime/log.ts";
import { median } from "../src/util/format.ts";

const { values } = parseArgs({
  options: { runs: { type: "string", default: "5" }, jdk: { type: "string", default: "17,25" }, json: { type: "string" }, "no-otel": { type: "boolean" } },
});
const runs = Number(values.runs);
const features = values.jdk.split(",").map(Number);

interface Config {
  name: string;
  /** JVM options on the command line, JAVA_TOOL_OPTIONS, the launch. */
  args: string[];
  toolOptions: string[];
  manifest?: Manifest;
  buildMs?: number;
}

interface Row {
  jdk: number;
  config: string;
  medianMs: number;
  samplesMs: number[];
  ratio: number | null;
  buildS: number | null;
  archiveMiB: number | null;
  hitRate: number | null;
  instrumented: boolean | null;
}

async function timeToReady(java: string, c: Config): Promise<number> {
  const port = await freePort();
  const jvm = JvmProcess.start({
    command: java,
    args: [`-Dserver.port=${port}`, ...c.args],
    env: cleanJvmEnv(c.toolOptions.length ? { JAVA_TOOL_OPTIONS: toJavaToolOptions(c.toolOptions) } : {}),
  });
  try {
    return (await jvm.waitForLine(BOOT_STARTED, 180_000)).ms;
  } finally {
    await jvm.stop(10_000);
  }
}

async function archiveConfig(name: string, store: string, java: string, app: string, agent?: { jar: string; profile: string }): Promise<Config> {
  const t0 = Date.now();
  const { manifest } = await buildArchive(
    { app, appArgs: [], jvmOptions: [], java, agent: agent?.jar, profile: agent?.profile, training: { readyUrl: undefined, readyLog: undefined, warmupUrls: [], timeoutMs: 300_000 }, store },
    { log: discardLogger },
  );
  const root = store;
  return { name, args: launchArgs(manifest.runtime.launch, root), toolOptions: manifest.runtime.jvmOptions.map((o) => fillRoot(o, root)), manifest, buildMs: Date.now() - t0 };
}

async function benchJdk(feature: number, app: string, ref: string, otel: string | undefined, store: string): Promise<Row[]> {
  const home = await findJdk(feature);
  if (!home) throw new Error(`JDK ${feature} not found (set JAVA_HOME or install it under /usr/lib/jvm)`);
  const java = join(home, "bin", "java");
  const otelOpts = (await loadProfile("otel")).runtime.extraJvmOpts;
  process.stderr.write(`JDK ${feature}: building archives…\n`);
  const configs: Config[] = [
    { name: "fat jar", args: ["-jar", app], toolOptions: [] },
    { name: "fat jar + reference agent", args: [`-javaagent:${ref}`, "-jar", app], toolOptions: [] },
  ];
  if (otel) configs.push({ name: "fat jar + OTel agent", args: [`-javaagent:${otel}`, ...otelOpts, "-jar", app], toolOptions: [] });
  configs.push(await archiveConfig("archive none", store, home, app));
  configs.push(await archiveConfig("archive baked (reference agent)", store, home, app, { jar: ref, profile: "reference" }));
  if (otel) configs.push(await archiveConfig("archive hybrid + OTel agent", store, home, app, { jar: otel, profile: "otel" }));
  const samples = new Map<string, number[]>(configs.map((c) => [c.name, []]));
  for (let i = 0; i < runs; i++) {
    for (const c of configs) {
      const ms = await timeToReady(java, c);
      samples.get(c.name)!.push(Math.round(ms));
      process.stderr.write(`JDK ${feature} run ${i + 1}/${runs} ${c.name}: ${Math.round(ms)} ms\n`);
    }
  }
  const base = median(samples.get("fat jar")!);
  return configs.map((c) => {
    const s = samples.get(c.name)!;
    const m = c.manifest;
    return {
      jdk: feature,
      config: c.name,
      medianMs: median(s),
      samplesMs: s,
      ratio: Math.round((median(s) / base) * 100) / 100,
      buildS: c.buildMs !== undefined ? Math.round(c.buildMs / 100) / 10 : null,
      archiveMiB: m ? Math.round((m.archive.size / 1048576) * 10) / 10 : null,
      hitRate: m ? m.verification.hitRate : null,
      instrumented: m ? m.verification.instrumented : null,
    };
  });
}

function table(rows: Row[]): string {
  const head = ["JDK", "configuration", "median ready ms", "× fat jar", "build s", "archive MiB", "hit rate", "instrumented"];
  const lines = rows.map((r) => [
    String(r.jdk),
    r.config,
    String(r.medianMs),
    r.ratio?.toFixed(2) ?? "",
    r.buildS?.toFixed(1) ?? "",
    r.archiveMiB?.toFixed(1) ?? "",
    r.hitRate !== null ? `${(r.hitRate * 100).toFixed(1)} %` : "",
    r.instrumented === null ? "" : r.instrumented ? "yes" : "no",
  ]);
  const out = [`| ${head.join(" | ")} |`, `| ${head.map(() => "---").join(" | ")} |`, ...lines.map((l) => `| ${l.join(" | ")} |`)];
  return out.join("\n");
}

const [app, ref, otel] = await Promise.all([demoAppJar(), referenceAgentJar(), values["no-otel"] ? undefined : otelAgentJar()]);
const store = await mkdtemp(join(tmpdir(), "classcache-bench-"));
try {
  const rows: Row[] = [];
  for (const f of features) rows.push(...(await benchJdk(f, app, ref, otel, store)));
  const extra = features.map((f) => {
    const r = rows.filter((x) => x.jdk === f);
    const get = (n: string) => r.find((x) => x.config === n)?.medianMs;
    const bakedVsAgent = (get("fat jar + reference agent") ?? NaN) / (get("archive baked (reference agent)") ?? NaN);
    return `JDK ${f}: archive none = ${r.find((x) => x.config === "archive none")?.ratio?.toFixed(2)}× fat jar; baked is ${bakedVsAgent.toFixed(2)}× faster than fat jar + reference agent`;
  });
  const result = { date: new Date().toISOString(), runs, rows, summary: extra };
  process.stdout.write(`\nStartup, median of ${runs} runs each (time from spawn to "Started … in"):\n\n${table(rows)}\n\n${extra.join("\n")}\n\n${JSON.stringify(result, null, 2)}\n`);
  if (values.json) await writeFile(values.json, JSON.stringify(result, null, 2) + "\n");
} finally {
  await rm(store, { recursive: true, force: true });
}
