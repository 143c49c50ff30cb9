/**
 * Finding a JDK and naming it exactly: the JVM build, its vendor, its libjvm bytes and the
 * effective VM flags that decide whether an archive is accepted.
 */
import { execFile } from "node:child_process";
import { readdir, realpath, stat } from "node:fs/promises";
import { delimiter, dirname, join } from "node:path";
import { promisify } from "node:util";
import { ClasscacheError } from "../runtime/errors.ts";
import { sha256File } from "../util/hash.ts";

const run = promisify(execFile);

/** Where the JDKs of a Linux machine usually live. */
export const JDK_SEARCH_DIRS = ["/usr/lib/jvm", "/opt/java", "/opt/jdk", "/usr/local/lib/jvm", "/opt"];

export interface VmFlags {
  gc: string;
  useCompressedOops: boolean;
  useCompressedClassPointers: boolean;
  useCompactObjectHeaders: boolean;
  objectAlignmentInBytes: number;
}

export interface JdkIdentity {
  home: string;
  /** Feature release: 17, 21, 25 … */
  feature: number;
  /** java.runtime.version, e.g. 17.0.15+6-Debian-1deb12u1 */
  runtimeVersion: string;
  /** java.vm.version */
  vmVersion: string;
  vmVendor: string;
  vendor: string;
  /** GOARCH-style name: amd64, arm64 … */
  arch: string;
  /** sha256 of lib/server/libjvm.so: two JVM builds with equal version strings still differ here. */
  libjvmSha256: string;
  /** Effective flags under the options the workload runs with. */
  flags: VmFlags;
}

export interface JdkCapabilities {
  /** -XX:ArchiveClassesAtExit (JDK 13+). */
  dynamicArchive: boolean;
  /** -XX:AOTCacheOutput in one step (JDK 25+). */
  aotCache: boolean;
  /** Accepts an app/boot class path moved under another directory prefix (JDK 19+, JDK-8279366). */
  relocatableClassPath: boolean;
  /** JDK 25 drops classes transformed by a ClassFileLoadHook from archives. */
  dropsTransformedClasses: boolean;
}

export function capabilities(feature: number): JdkCapabilities {
  return {
    dynamicArchive: feature >= 13,
    aotCache: feature >= 25,
    relocatableClassPath: feature >= 19,
    dropsTransformedClasses: feature >= 25,
  };
}

/** JAVA_HOME from, in order: the flag, $JAVA_HOME, the `java` on $PATH. */
export async function resolveJavaHome(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const candidates: [string, string][] = [];
  if (flag) candidates.push([flag, "--java"]);
  else if (env.JAVA_HOME) candidates.push([env.JAVA_HOME, "JAVA_HOME"]);
  else {
    for (const dir of (env.PATH ?? "").split(delimiter)) {
      if (!dir) continue;
      try {
        const java = await realpath(join(dir, "java"));
        candidates.push([dirname(dirname(java)), "PATH"]);
        break;
      } catch {
        /* not here */
      }
    }
  }
  const [home, source] = candidates[0] ?? [];
  if (!home || !source) {
    throw new ClasscacheError("input", "no JDK found", { hint: "pass --java <JAVA_HOME>, set JAVA_HOME, or put java on PATH" });
  }
  const java = join(home, "bin", "java");
  try {
    await stat(java);
  } catch {
    throw new ClasscacheError("input", `${home} (from ${source}) is not a JDK: ${java} does not exist`, {
      hint: "point --java or JAVA_HOME at a JDK's home directory (the one containing bin/java)",
    });
  }
  return realpath(home);
}

/** Every JDK in the usual directories, newest feature release first. */
export async function discoverJdks(dirs = JDK_SEARCH_DIRS): Promise<{ home: string; feature: number }[]> {
  const found = new Map<string, number>();
  for (const dir of dirs) {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      const home = join(dir, name);
      try {
        const real = await realpath(home);
        if (found.has(real)) continue;
        await stat(join(real, "bin", "java"));
        const feature = await releaseFeature(real);
        if (feature !== undefined) found.set(real, feature);
      } catch {
        /* not a JDK */
      }
    }
  }
  return [...found].map(([home, feature]) => ({ home, feature })).sort((a, b) => b.feature - a.feature);
}

/** A discovered JDK of the given feature release, honouring JAVA_HOME first. */
export async function findJdk(feature: number): Promise<string | undefined> {
  const env = process.env.JAVA_HOME;
  if (env && (await releaseFeature(env).catch(() => undefined)) === feature) return realpath(env);
  return (await discoverJdks()).find((j) => j.feature === feature)?.home;
}

async function releaseFeature(home: string): Promise<number | undefined> {
  const { readFile } = await import("node:fs/promises");
  const text = await readFile(join(home, "release"), "utf8");
  const m = /^JAVA_VERSION="(\d+)(?:\.(\d+))?/m.exec(text);
  if (!m) return undefined;
  const major = Number(m[1]);
  return major === 1 ? Number(m[2]) : major;
}

const ARCH: Record<string, string> = { amd64: "amd64", x86_64: "amd64", aarch64: "arm64", arm64: "arm64", ppc64le: "ppc64le", s390x: "s390x" };

/**
 * Runs the JDK once with the workload's own VM options and reads its identity and effective
 * flags. GC and compressed-pointer modes come from ergonomics (heap size, CPU count), so they
 * must be read under the same options and limits the workload will have.
 */
export async function probeJdk(home: string, vmOptions: string[] = []): Promise<JdkIdentity> {
  const java = join(home, "bin", "java");
  // Options that would start an agent or an archive are not identity: leave them out.
  const opts = vmOptions.filter((o) => !/^-(javaagent|agentlib|agentpath|XX:(SharedArchiveFile|AOTCache|ArchiveClassesAtExit|AOTCacheOutput))/.test(o));
  let stdout: string;
  let stderr: string;
  try {
    ({ stdout, stderr } = await run(java, [...opts, "-XshowSettings:properties", "-XX:+PrintFlagsFinal", "-version"], {
      maxBuffer: 64 << 20,
      env: { ...process.env, JAVA_TOOL_OPTIONS: "", JDK_JAVA_OPTIONS: "", _JAVA_OPTIONS: "" },
    }));
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new ClasscacheError("input", `the JDK at ${home} failed to start with the given JVM options`, {
      details: (e.stderr ?? e.message).split("\n").slice(-8).join("\n"),
      hint: "check --java and every --jvm-opt",
      cause: err,
    });
  }
  const props = parseProperties(stderr);
  const flags = parseFlags(stdout);
  const version = props.get("java.version") ?? "";
  const m = /^(?:1\.)?(\d+)/.exec(version);
  const feature = m ? Number(m[1]) : NaN;
  const rawArch = props.get("os.arch") ?? "";
  const libjvm = join(home, "lib", "server", "libjvm.so");
  let libjvmSha256: string;
  try {
    libjvmSha256 = (await sha256File(libjvm)).sha256;
  } catch {
    throw new ClasscacheError("input", `${home} has no server VM (${libjvm} is missing)`, {
      hint: "class-data archives need the HotSpot server VM; use a full JDK or JRE build",
    });
  }
  return {
    home,
    feature,
    runtimeVersion: props.get("java.runtime.version") ?? version,
    vmVersion: props.get("java.vm.version") ?? "",
    vmVendor: props.get("java.vm.vendor") ?? "",
    vendor: props.get("java.vendor") ?? "",
    arch: ARCH[rawArch] ?? rawArch,
    libjvmSha256,
    flags: {
      gc: ["UseSerialGC", "UseParallelGC", "UseG1GC", "UseZGC", "UseShenandoahGC", "UseEpsilonGC"].find((f) => flags.get(f) === "true")?.slice(3) ?? "unknown",
      useCompressedOops: flags.get("UseCompressedOops") === "true",
      useCompressedClassPointers: flags.get("UseCompressedClassPointers") === "true",
      useCompactObjectHeaders: flags.get("UseCompactObjectHeaders") === "true",
      objectAlignmentInBytes: Number(flags.get("ObjectAlignmentInBytes") ?? 8),
    },
  };
}

function parseProperties(text: string): Map<string, string> {
  const props = new Map<string, string>();
  let last: string | undefined;
  for (const line of text.split("\n")) {
    const m = /^ {4}([\w.]+) = (.*)$/.exec(line);
    if (m) {
      last = m[1]!;
      props.set(last, m[2]!);
    } else if (last && /^ {8}\S/.test(line)) {
      props.set(last, `${props.get(last)}\n${line.trim()}`);
    } else {
      last = undefined;
    }
  }
  return props;
}

function parseFlags(text: string): Map<string, string> {
  const flags = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^\s*\S+\s+(\w+)\s+:?=\s+(\S+)/.exec(line);
    if (m) flags.set(m[1]!, m[2]!);
  }
  return flags;
}
