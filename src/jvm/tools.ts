/**
 * Small Java tools classcache ships as source (the capture agent, the pods' jar check), compiled
 * on first use with a JDK's javac and cached by source digest under <cache>/tools — a kit
 * (scripts/kit.sh) carries them compiled, so images without javac never compile anything.
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { homedir, tmpdir } from "node:os";
import { join, relative } from "node:path";
import { promisify } from "node:util";
import { ClasscacheError } from "../runtime/errors.ts";
import { sha256Hex } from "../util/hash.ts";
import { renderManifest, ZipWriter } from "../util/zip.ts";
import { discoverJdks } from "./jdk.ts";

const run = promisify(execFile);

export function toolsCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.CLASSCACHE_CACHE ?? join(env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "classcache");
  return join(base, "tools");
}

export interface ToolSpec {
  /** The jar's name in the cache, before the source digest. */
  name: string;
  /** One .java file. */
  source: string;
  /** The `--release` it is compiled for: the oldest JVM it must run on. */
  release: number;
  /** Extra main-manifest attributes (Premain-Class, Main-Class, …). */
  manifest: [string, string][];
  /** A JDK whose javac to try first. */
  preferredHome: string;
  /** Why javac is needed, for the error when there is none. */
  why: string;
}

/** The tool's jar, compiled if the cache does not hold this source's build yet. */
export async function toolJar(t: ToolSpec): Promise<string> {
  const source = await readFile(t.source);
  const dir = toolsCacheDir();
  const jar = join(dir, `${t.name}-${sha256Hex(source).slice(0, 16)}.jar`);
  if (await stat(jar).catch(() => undefined)) return jar;
  const homes = [t.preferredHome, ...(await discoverJdks()).map((j) => j.home)].filter(Boolean);
  let javac: string | undefined;
  for (const h of homes) {
    if (await stat(join(h, "bin", "javac")).catch(() => undefined)) {
      javac = join(h, "bin", "javac");
      break;
    }
  }
  if (!javac) {
    throw new ClasscacheError("input", `${t.why}, and none was found`, {
      hint: "install a full JDK (not a JRE) once on this machine, or use a classcache image that ships its tools compiled",
    });
  }
  await mkdir(dir, { recursive: true });
  const work = await mkdtemp(join(tmpdir(), `classcache-${t.name}-`));
  try {
    await run(javac, ["--release", String(t.release), "-nowarn", "-Xlint:-options", "-d", join(work, "classes"), t.source]);
    const tmpJar = join(dir, `.${t.name}-${process.pid}.jar`);
    await rm(tmpJar, { force: true });
    const w = await ZipWriter.create(tmpJar);
    await w.add({ name: "META-INF/", data: Buffer.alloc(0) });
    await w.add({ name: "META-INF/MANIFEST.MF", data: Buffer.from(renderManifest([["Manifest-Version", "1.0"], ...t.manifest])) });
    for (const f of await listFiles(join(work, "classes"))) {
      await w.add({ name: relative(join(work, "classes"), f), data: await readFile(f) });
    }
    await w.finish();
    await rename(tmpJar, jar);
    return jar;
  } catch (err) {
    if (err instanceof ClasscacheError) throw err;
    throw new ClasscacheError("internal", `could not compile classcache's ${t.name}`, { cause: err });
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
