/**
 * The demo's real parts, built or fetched with Maven and cached outside the repository (keyed
 * by the digest of their sources), so only a machine's first run pays for them:
 * the Spring Boot demo app, the reference agent, and the OpenTelemetry Java agent.
 */
import { execFile } from "node:child_process";
import { copyFile, mkdir, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { join, relative } from "node:path";
import { promisify } from "node:util";
import { ClasscacheError } from "../runtime/errors.ts";
import { sha256Hex } from "../util/hash.ts";
import { withFileLock } from "../util/lock.ts";

const run = promisify(execFile);

export const REPO = join(import.meta.dirname, "..", "..");
export const OTEL_AGENT_VERSION = "2.33.1";
export const DATADOG_AGENT_VERSION = "1.68.1";
export const ELASTIC_AGENT_VERSION = "1.55.1";

export function fixturesDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.CLASSCACHE_CACHE ?? join(env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "classcache");
  return join(base, "fixtures");
}

async function sourceDigest(project: string): Promise<string> {
  const files: string[] = [];
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.name === "target") continue;
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else files.push(p);
    }
  };
  await walk(project);
  files.sort();
  const parts = await Promise.all(files.map(async (f) => `${relative(project, f)}\0${sha256Hex(await readFile(f))}`));
  return sha256Hex(parts.join("\n")).slice(0, 16);
}

async function mvn(args: string[], what: string): Promise<void> {
  try {
    await run("mvn", ["-q", "-B", ...args], { maxBuffer: 64 << 20 });
  } catch (err) {
    const e = err as { code?: string; stdout?: string; stderr?: string };
    if (e.code === "ENOENT") throw new ClasscacheError("input", `Maven (mvn) is needed to ${what}, and it is not on PATH`, { hint: "install Maven 3.8+ (apt-get install maven)" });
    throw new ClasscacheError("input", `Maven failed to ${what}`, { details: `${e.stdout ?? ""}${e.stderr ?? ""}`.split("\n").slice(-20).join("\n"), cause: err });
  }
}

/** Builds a Maven project under java/ once per source digest and returns the cached jar. */
async function buildProject(name: string, jarName: string): Promise<string> {
  const project = join(REPO, "java", name);
  const dir = fixturesDir();
  await mkdir(dir, { recursive: true });
  const cached = join(dir, `${name}-${await sourceDigest(project)}.jar`);
  if (await stat(cached).catch(() => undefined)) return cached;
  return withFileLock(join(dir, `${name}.lock`), async () => {
    if (await stat(cached).catch(() => undefined)) return cached;
    await mvn(["-f", join(project, "pom.xml"), "package", "-DskipTests"], `build ${name}`);
    const tmp = `${cached}.tmp-${process.pid}`;
    await copyFile(join(project, "target", jarName), tmp);
    await rename(tmp, cached);
    return cached;
  });
}

export function demoAppJar(): Promise<string> {
  return buildProject("demo-app", "demo-app.jar");
}

export function referenceAgentJar(): Promise<string> {
  return buildProject("reference-agent", "reference-agent.jar");
}

/** The OpenTelemetry Java agent from Maven Central. */
export function otelAgentJar(version = OTEL_AGENT_VERSION): Promise<string> {
  return mavenJar("io.opentelemetry.javaagent", "opentelemetry-javaagent", version, "the OpenTelemetry agent");
}

/** Datadog's Java agent (dd-trace-java) from Maven Central. */
export function datadogAgentJar(version = DATADOG_AGENT_VERSION): Promise<string> {
  return mavenJar("com.datadoghq", "dd-java-agent", version, "the Datadog agent");
}

/** Elastic's APM Java agent from Maven Central. */
export function elasticAgentJar(version = ELASTIC_AGENT_VERSION): Promise<string> {
  return mavenJar("co.elastic.apm", "elastic-apm-agent", version, "the Elastic APM agent");
}

/** An artifact's jar from Maven Central, fetched once into the fixtures cache. */
async function mavenJar(group: string, artifact: string, version: string, what: string): Promise<string> {
  const dir = fixturesDir();
  await mkdir(dir, { recursive: true });
  const jar = join(dir, `${artifact}-${version}.jar`);
  if (await stat(jar).catch(() => undefined)) return jar;
  return withFileLock(join(dir, `${artifact}.lock`), async () => {
    if (await stat(jar).catch(() => undefined)) return jar;
    const tmp = join(dir, `${artifact}-${process.pid}`);
    await rm(tmp, { recursive: true, force: true });
    await mvn(["dependency:copy", `-Dartifact=${group}:${artifact}:${version}`, `-DoutputDirectory=${tmp}`], `fetch ${what}`);
    await rename(join(tmp, `${artifact}-${version}.jar`), jar);
    await rm(tmp, { recursive: true, force: true });
    return jar;
  });
}
