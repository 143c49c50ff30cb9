/**
 * Reading `-Xlog:class+load` output: where each loaded class came from. Used to explain a hit
 * rate (which classes did not come from the archive, and why) and to tell whether the archive
 * was mapped at all.
 */

export type ClassSource = "archive" | "jdk" | "class path" | "generated" | "other";

export interface ClassLoadSummary {
  total: number;
  bySource: Record<ClassSource, number>;
  /** Source of specific classes we asked about (e.g. the main class), when seen. */
  sourceOf: Map<string, string>;
}

const LINE = /\[class,load\s*\] (\S+) source: (.*)$/;

export function classifySource(source: string): ClassSource {
  if (source.startsWith("shared objects file")) return "archive";
  if (source.startsWith("jrt:/")) return "jdk";
  if (source.startsWith("file:") || source.startsWith("jar:") || source.startsWith("nested:")) return "class path";
  if (/^__(JVM_)?(Lookup)?_?[Dd]efine/.test(source) || source.startsWith("__") || source.startsWith("instance of")) return "generated";
  if (/^[\w$.]+$/.test(source)) return "generated"; // lambda proxies name their host class
  return "other";
}

export function summarizeClassLoads(text: string, watch: string[] = []): ClassLoadSummary {
  const bySource: Record<ClassSource, number> = { archive: 0, jdk: 0, "class path": 0, generated: 0, other: 0 };
  const sourceOf = new Map<string, string>();
  const wanted = new Set(watch);
  let total = 0;
  for (const line of text.split("\n")) {
    const m = LINE.exec(line);
    if (!m) continue;
    total++;
    bySource[classifySource(m[2]!)]++;
    if (wanted.has(m[1]!)) sourceOf.set(m[1]!, m[2]!);
  }
  return { total, bySource, sourceOf };
}

/** Lines in which the JVM explains why it did not use an archive. */
export function archiveProblems(text: string): string[] {
  const re = /(mismatch|Unable to (use|map)|An error has occurred|different version|disabled|not (be )?used|cannot be used|failed|error|Error)/;
  return text
    .split("\n")
    .filter((l) => /\[(cds|aot|class,path)[^\]]*\]/.test(l) && (re.test(l) || /\]\[(error|warning)\s*\]/.test(l)) && !/\[class,load/.test(l))
    .map((l) => l.replace(/^\[[^\]]*\]\[[^\]]*\]\[[^\]]*\]\s*/, "").trim())
    .slice(0, 10);
}
