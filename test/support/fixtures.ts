/** Small Java apps for tests, compiled with a real JDK's javac into jars. */
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { renderManifest, ZipWriter } from "../../src/util/zip.ts";

const run = promisify(execFile);

/** Compiles test/fixtures/<name>.java with `javaHome`'s javac into `<dir>/<name>.jar` (with `manifest`'s attributes, e.g. Main-Class). */
export async function fixtureJar(javaHome: string, name: string, dir: string, manifest: [string, string][] = []): Promise<string> {
  const out = join(dir, `${name}-classes`);
  await run(join(javaHome, "bin", "javac"), ["--release", "17", "-d", out, join(import.meta.dirname, "..", "fixtures", `${name}.java`)]);
  const jar = join(dir, `${name}.jar`);
  const w = await ZipWriter.create(jar);
  await w.add({ name: "META-INF/MANIFEST.MF", data: Buffer.from(renderManifest([["Manifest-Version", "1.0"], ...manifest])) });
  await w.add({ name: `${name}.class`, data: await readFile(join(out, `${name}.class`)) });
  await w.finish();
  return jar;
}
