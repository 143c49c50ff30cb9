/**
 * The init step of a patched pod: decides, on the node the pod landed on, what its JVM gets.
 *
 * It reads its scope's view of the node's store (mounted read-only at the store's own path, so
 * the paths are the ones the archive was built with) and writes two argument files that the patched
 * container's `java` reads: JVM options (through `JDK_JAVA_OPTIONS=@file`) and the launch
 * (`java … @launch.args <app args>`). When the node holds a verified archive for the pod's
 * ref, they point the JVM at the archive and at the store's extracted, mtime-pinned copy of the
 * app; otherwise they hold exactly the pod's own launch — a pod never waits for a build (only,
 * up to 3 s, for its node to pull an archive that is already bound, see `want`) and never gets
 * `-XX:SharedArchiveFile` for a file that is not there (which would turn off all CDS).
 * Both files always exist, even on error: a missing @file stops the java launcher.
 */
import { access, readFile, rename, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { join } from "node:path";
import type { Manifest } from "../archive/manifest.ts";
import { fillRoot, launchArgs } from "../jvm/launch.ts";
import { withMemorySharing } from "../jvm/options.ts";
import { refPath } from "../store/store.ts";
import { toolJar } from "../jvm/tools.ts";

export interface PodInitOptions {
  ref: string;
  arch: string;
  /** The node store as this process sees it: the pod's scope's view (read-only is fine). */
  store: string;
  /** Where the app container sees the store: the same fixed path as in the build. */
  root: string;
  /** Directory (an emptyDir shared with the app container) for jvm.args and launch.args. */
  out: string;
  /** The container's own launch, e.g. ["-jar", "/app.jar"], used when there is no archive. */
  fallback: string[];
  /** JVM options without an archive, e.g. a live -javaagent so instrumentation is never lost. */
  fallbackJvm: string[];
  shareMemory: boolean;
  /** The node agent's socket: told about a missing ref so the next pod gets the archive. */
  socket?: string;
}

export interface PodInitResult {
  archive: boolean;
  key?: string;
  reason: string;
  jvm: string[];
  launch: string[];
  /** With an archive: the sha256 of each application jar it was built from, in class-path order. */
  appDigests?: string[];
}

/** What the pod's JVM gets. Never throws: any problem means "run as without classcache". */
export async function planPod(o: PodInitOptions): Promise<PodInitResult> {
  const fallback = (reason: string): PodInitResult => ({ archive: false, reason, jvm: o.fallbackJvm, launch: o.fallback });
  let key: string;
  try {
    key = (await readFile(refPath(o.store, `${o.ref}.${o.arch}`), "utf8")).split("\n")[0]!.trim();
  } catch {
    return fallback("this node has no archive for the ref yet");
  }
  try {
    if (!/^[0-9a-f]{64}$/.test(key)) return fallback("the node's ref record is malformed");
    const m = JSON.parse(await readFile(join(o.store, "manifests", `${key}.json`), "utf8")) as Manifest;
    await access(join(o.store, m.archive.file));
    await access(join(o.store, "layouts", m.layout.id));
    const opts = o.shareMemory ? withMemorySharing(m.runtime.jvmOptions) : m.runtime.jvmOptions;
    return { archive: true, key, reason: "archive present and verified on this node", jvm: opts.map((x) => fillRoot(x, o.root)), launch: launchArgs(m.runtime.launch, o.root), appDigests: m.inputs.app.digests };
  } catch (err) {
    return fallback(`the archive on this node is incomplete (${err instanceof Error ? err.message : String(err)})`);
  }
}

/** The application jars of a launch as the pod's own image has them: `-jar <jar>`, or each entry of `-cp <a:b> <main>`. */
export function jarsOf(launch: string[]): string[] {
  if (launch[0] === "-jar" && launch[1]) return [launch[1]];
  if (["-cp", "-classpath", "--class-path"].includes(launch[0] ?? "") && launch[1]) return launch[1].split(":").filter(Boolean);
  return [];
}

/**
 * Stages an archive for the jar check that runs next, in the pod's own image (JarCheck.java):
 * the pod's own launch is what is active; the archive's options and launch wait next to it, with
 * the digest each of the pod's jars must have. Only the check moves them in, and only when every
 * digest matches: a pod never launches an extracted app whose jars differ from its own image's
 * (a tag re-pushed with new content). The pod's own launch is already active (the caller wrote
 * it first). Returns why nothing was staged, if nothing was.
 */
export async function stageForCheck(o: Pick<PodInitOptions, "out" | "fallback" | "fallbackJvm">, r: PodInitResult): Promise<string | undefined> {
  const jars = jarsOf(o.fallback);
  const digests = r.appDigests ?? [];
  if (jars.length === 0 || jars.length !== digests.length) return `the pod's launch names ${jars.length} jar(s), the archive was built from ${digests.length}`;
  if (jars.some((j) => /[\r\n]/.test(j))) return "a jar path of the pod's launch has a line break";
  await writeAtomic(join(o.out, "archive.jvm.args"), argfile(r.jvm));
  await writeAtomic(join(o.out, "archive.launch.args"), argfile(r.launch));
  await writeAtomic(join(o.out, "check.args"), jars.map((j, i) => `${digests[i]} ${j}`).join("\n") + "\n");
  return undefined;
}

/** The jar check's name in the pod's argument directory. */
export const CHECK_JAR = "jar-check.jar";

/** The jar check (check/JarCheck.java), compiled ahead in a kit, else now. */
export function jarCheckJar(): Promise<string> {
  return toolJar({
    name: "jar-check",
    source: join(import.meta.dirname, "check", "JarCheck.java"),
    release: 8,
    manifest: [["Main-Class", "dev.classcache.check.JarCheck"]],
    preferredHome: "",
    why: "the pods' jar check needs javac once, to be compiled",
  });
}

/** One argument per line, quoted when needed (the java launcher's @argfile syntax). */
export function argfile(args: string[]): string {
  return args.map((a) => (a === "" || /[\s"'#\\]/.test(a) ? `"${a.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"` : a)).join("\n") + "\n";
}

async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}

export async function writeArgfiles(out: string, r: Pick<PodInitResult, "jvm" | "launch">): Promise<void> {
  await writeAtomic(join(out, "jvm.args"), argfile(r.jvm));
  await writeAtomic(join(out, "launch.args"), argfile(r.launch));
}

/**
 * Tells the node agent that a pod here wants `ref`, and waits up to `waitMs` for the agent to
 * put it on the node (a pull from a peer when the ref is bound; nothing bound answers at once).
 * Resolves "held" when the node now holds it, "wanted" when the want was taken, "unreachable"
 * otherwise; gives up quietly after `waitMs` + `timeoutMs`.
 */
export function want(socket: string, ref: string, opts: { waitMs?: number; timeoutMs?: number } = {}): Promise<"held" | "wanted" | "unreachable"> {
  const waitMs = opts.waitMs ?? 0;
  return new Promise((resolve) => {
    const body = JSON.stringify(waitMs > 0 ? { ref, waitMs } : { ref });
    const req = request({ socketPath: socket, path: "/v1/want", method: "POST", headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) }, timeout: waitMs + (opts.timeoutMs ?? 500) }, (res) => {
      res.resume();
      resolve(res.statusCode === 200 ? "held" : res.statusCode === 202 ? "wanted" : "unreachable");
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve("unreachable"));
    req.end(body);
  });
}
