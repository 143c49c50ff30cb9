/**
 * The capture agent (capture/CaptureAgent.java) compiled on first use with a JDK's javac and
 * cached by source digest, and the reading of what it captured.
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { join, relative } from "node:path";
import { promisify } from "node:util";
import { discoverJdks } from "../jvm/jdk.ts";
import { ClasscacheError } from "../runtime/errors.ts";
import { sha256Hex } from "../util/hash.ts";
import { renderManifest, ZipWriter } from "../util/zip.ts";

const run = promisify(execFile);
const SOURCE = join(import.meta.dirname, "capture", "CaptureAgent.java");

export function toolsCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.CLASSCACHE_CACHE ?? join(env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "classcache");
  return join(base, "tools");
}

/** Returns the capture agent jar, compiling it with `preferredHome`'s javac (or any JDK's) if needed. */
export async function captureAgentJar(preferredHome: string): Promise<string> {
  const source = await readFile(SOURCE);
  const dir = toolsCacheDir();
  const jar = join(dir, `capture-agent-${sha256Hex(source).slice(0, 16)}.jar`);
  if (await stat(jar).catch(() => undefined)) return jar;
  const homes = [preferredHome, ...(await discoverJdks()).map((j) => j.home)];
  let javac: string | undefined;
  for (const h of homes) {
    if (await stat(join(h, "bin", "javac")).catch(() => undefined)) {
      javac = join(h, "bin", "javac");
      break;
    }
  }
  if (!javac) {
    throw new ClasscacheError("input", "baked mode on this JDK needs javac once, to compile classcache's capture agent, and none was found", {
      hint: "install a full JDK (not a JRE) once on this machine, or use a classcache image that ships the capture agent",
    });
  }
  await mkdir(dir, { recursive: true });
  const work = await mkdtemp(join(tmpdir(), "classcache-capture-"));
  try {
    await run(javac, ["--release", "17", "-d", join(work, "classes"), SOURCE]);
    const tmpJar = join(dir, `.capture-agent-${process.pid}.jar`);
    await rm(tmpJar, { force: true });
    const w = await ZipWriter.create(tmpJar);
    await w.add({ name: "META-INF/", data: Buffer.alloc(0) });
    await w.add({
      name: "META-INF/MANIFEST.MF",
      data: Buffer.from(renderManifest([["Manifest-Version", "1.0"], ["Premain-Class", "dev.classcache.capture.CaptureAgent"], ["Can-Retransform-Classes", "true"]])),
    });
    for (const f of await listFiles(join(work, "classes"))) {
      await w.add({ name: relative(join(work, "classes"), f), data: await readFile(f) });
    }
    await w.finish();
    await rename(tmpJar, jar);
    return jar;
  } catch (err) {
    if (err instanceof ClasscacheError) throw err;
    throw new ClasscacheError("internal", "could not compile classcache's capture agent", { cause: err });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listFiles(p)));
    else out.push(p);
  }
  return out.sort();
}

export interface Captured {
  /** jar path as the JVM saw it → entry name → file with the transformed bytes */
  byJar: Map<string, Map<string, string>>;
  /** Transformed classes that cannot be woven, with the reason. */
  unbaked: { name: string; reason: string }[];
}

export async function readCaptured(dir: string): Promise<Captured> {
  const byJar = new Map<string, Map<string, string>>();
  const index = await readFile(join(dir, "index.tsv"), "utf8").catch(() => "");
  for (const line of index.split("\n")) {
    const [jar, entry, file] = line.split("\t");
    if (!jar || !entry || !file) continue;
    if (!byJar.has(jar)) byJar.set(jar, new Map());
    byJar.get(jar)!.set(entry, join(dir, "classes", file));
  }
  const unbaked = (await readFile(join(dir, "unbaked.tsv"), "utf8").catch(() => ""))
    .split("\n")
    .filter(Boolean)
    .map((l) => {
      const [name, ...reason] = l.split("\t");
      return { name: name ?? "", reason: reason.join("\t") };
    });
  return { byJar, unbaked };
}
