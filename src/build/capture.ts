/**
 * The capture agent (capture/CaptureAgent.java) compiled on first use with a JDK's javac and
 * cached by source digest, and the reading of what it captured.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { toolJar } from "../jvm/tools.ts";
const SOURCE = join(import.meta.dirname, "capture", "CaptureAgent.java");

/** Returns the capture agent jar, compiling it with `preferredHome`'s javac (or any JDK's) if needed. */
export function captureAgentJar(preferredHome: string): Promise<string> {
  return toolJar({
    name: "capture-agent",
    source: SOURCE,
    release: 17,
    manifest: [["Premain-Class", "dev.classcache.capture.CaptureAgent"], ["Can-Retransform-Classes", "true"]],
    preferredHome,
    why: "baked mode on this JDK needs javac once, to compile classcache's capture agent",
  });
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
