/**
 * Deterministic extraction: turns an app into the class-path layout CDS needs (dynamic
 * archives only hold classes loaded from jar files on the class path, not from a fat jar's
 * nested jars). A Spring Boot fat jar becomes `app.jar` + `lib/*.jar`, as
 * `java -Djarmode=tools -jar app.jar extract` lays it out — but byte-for-byte reproducible:
 * nested jars are copied verbatim, app.jar's entries are copied raw (never recompressed), and
 * the store pins every file's mtime to a function of its content.
 */
import { createWriteStream } from "node:fs";
import { copyFile, mkdir, stat } from "node:fs/promises";
import { basename, join } from "node:path";
import { pipeline } from "node:stream/promises";
import { ClasscacheError } from "../runtime/errors.ts";
import { openZip, parseManifest, renderManifest, ZipFormatError, ZipWriter, type ZipReader } from "../util/zip.ts";

export interface AppInfo {
  kind: "boot" | "classpath";
  /** The jars as given. */
  sources: string[];
  mainClass: string;
  bootVersion: string | undefined;
}

export interface ExtractedFile {
  path: string;
  tempPath: string;
}

const SIGNATURE = /^META-INF\/[^/]+\.(SF|RSA|DSA|EC)$/i;

/** Opens a jar, turning "not a zip" into a message about the user's file. */
export async function openJar(path: string, role: string): Promise<ZipReader> {
  const st = await stat(path).catch(() => undefined);
  if (!st) throw new ClasscacheError("input", `${role} ${path} does not exist`);
  if (st.isDirectory()) {
    throw new ClasscacheError("input", `${role} ${path} is a directory, not a jar`, {
      hint: "class-data archives only hold classes loaded from jar files; package the directory as a jar",
    });
  }
  try {
    return await openZip(path);
  } catch (err) {
    if (err instanceof ZipFormatError) {
      throw new ClasscacheError("input", `${role} ${path} is not a valid jar: ${err.message}`, { hint: "check that the file is a complete, uncorrupted jar", cause: err });
    }
    throw err;
  }
}

export async function readJarManifest(zip: ZipReader): Promise<Map<string, string>> {
  const entry = zip.get("META-INF/MANIFEST.MF");
  return entry ? parseManifest((await entry.read()).toString("utf8")) : new Map();
}

/** Reads what kind of app a fat jar is. Anything but a Spring Boot fat jar is refused with advice. */
export async function inspectFatJar(path: string): Promise<AppInfo> {
  const zip = await openJar(path, "app");
  try {
    const mf = await readJarManifest(zip);
    const start = mf.get("Start-Class");
    const isBoot = start !== undefined && zip.entries.some((e) => e.name.startsWith("BOOT-INF/"));
    if (!isBoot) {
      const main = mf.get("Main-Class");
      throw new ClasscacheError("input", `${path} is not a Spring Boot fat jar (no Start-Class and BOOT-INF/)`, {
        hint: main
          ? `for a plain jar, use --classpath ${path} --main ${main}`
          : "pass a Spring Boot fat jar with --app, or a class path with --classpath <a.jar:b.jar> --main <class>",
      });
    }
    // Validate every entry's data once: a truncated or corrupt jar fails here, not in the JVM.
    for (const e of zip.entries) if (!e.isDirectory && e.name.startsWith("BOOT-INF/classes/")) await e.read();
    return { kind: "boot", sources: [path], mainClass: start, bootVersion: mf.get("Spring-Boot-Version") };
  } catch (err) {
    if (err instanceof ZipFormatError) throw new ClasscacheError("input", `app ${path} is a corrupt jar: ${err.message}`, { cause: err });
    throw err;
  } finally {
    zip.close();
  }
}

/** Checks a plain class path: every entry must be a readable jar. */
export async function inspectClassPath(jars: string[], mainClass: string): Promise<AppInfo> {
  if (!/^[\p{L}_$][\p{L}\p{N}_$]*(\.[\p{L}_$][\p{L}\p{N}_$]*)*$/u.test(mainClass)) {
    throw new ClasscacheError("usage", `--main ${mainClass} is not a Java class name`, { hint: "give the fully qualified name, e.g. com.example.Main" });
  }
  for (const jar of jars) {
    const zip = await openJar(jar, "class-path entry");
    try {
      for (const e of zip.entries) if (!e.isDirectory && e.name.endsWith(".class")) await e.readRaw();
    } catch (err) {
      if (err instanceof ZipFormatError) throw new ClasscacheError("input", `class-path entry ${jar} is a corrupt jar: ${err.message}`, { cause: err });
      throw err;
    } finally {
      zip.close();
    }
  }
  return { kind: "classpath", sources: jars, mainClass, bootVersion: undefined };
}

/** Extracts a Boot fat jar into `work`: app.jar + lib/, returning the files in class-path order. */
export async function extractBootJar(fatJar: string, work: string): Promise<{ files: ExtractedFile[]; classPath: string[] }> {
  const zip = await openJar(fatJar, "app");
  try {
    const mf = await readJarManifest(zip);
    const libs = await nestedJarOrder(zip);
    const files: ExtractedFile[] = [];
    await mkdir(join(work, "lib"), { recursive: true });
    const libNames: string[] = [];
    for (const name of libs) {
      const entry = zip.get(name)!;
      const rel = `lib/${basename(name)}`;
      const out = join(work, rel);
      await pipeline(await entry.stream(), createWriteStream(out, { flags: "wx" }));
      files.push({ path: rel, tempPath: out });
      libNames.push(rel);
    }
    const appJar = join(work, "app.jar");
    await writeAppJar(zip, mf, libNames, appJar);
    return { files: [{ path: "app.jar", tempPath: appJar }, ...files], classPath: ["app.jar", ...libNames] };
  } catch (err) {
    if (err instanceof ZipFormatError) throw new ClasscacheError("input", `app ${fatJar} is a corrupt jar: ${err.message}`, { cause: err });
    throw err;
  } finally {
    zip.close();
  }
}

/** The nested jars in class-path order: BOOT-INF/classpath.idx when present, else zip order. */
async function nestedJarOrder(zip: ZipReader): Promise<string[]> {
  const inZip = zip.entries.filter((e) => /^BOOT-INF\/lib\/[^/]+\.jar$/.test(e.name)).map((e) => e.name);
  const idx = zip.get("BOOT-INF/classpath.idx");
  if (!idx) return inZip;
  const listed = (await idx.read())
    .toString("utf8")
    .split("\n")
    .map((l) => /^- "(.+)"\s*$/.exec(l)?.[1])
    .filter((n): n is string => n !== undefined && zip.get(n) !== undefined);
  const rest = inZip.filter((n) => !listed.includes(n));
  return [...listed, ...rest];
}

/**
 * The Spring Boot loader registers its nested-jar file system in the fat jar's root META-INF; the
 * loader is not part of the extracted app, so the registration would name a class that is not
 * there. Spring Boot's own `-Djarmode=tools extract` leaves it out too. (Kept, it breaks whatever
 * lists the installed file systems: Elastic's agent fails to start its instrumentation.)
 */
const LOADER_ONLY = new Set(["META-INF/services/java.nio.file.spi.FileSystemProvider"]);

/** Writes app.jar: BOOT-INF/classes re-rooted, root META-INF kept (but the loader's registration), Main-Class = Start-Class. */
async function writeAppJar(zip: ZipReader, mf: Map<string, string>, libs: string[], out: string): Promise<void> {
  const attrs: [string, string][] = [["Manifest-Version", "1.0"]];
  for (const [k, v] of mf) {
    if (k === "Manifest-Version" || k === "Main-Class" || k === "Class-Path" || k === "Start-Class" || k.startsWith("Spring-Boot-")) continue;
    attrs.push([k, v]);
  }
  attrs.push(["Main-Class", mf.get("Start-Class")!]);
  if (libs.length) attrs.push(["Class-Path", libs.map((l) => encodeURI(l)).join(" ")]);
  const w = await ZipWriter.create(out);
  try {
    await w.add({ name: "META-INF/", data: Buffer.alloc(0) });
    await w.add({ name: "META-INF/MANIFEST.MF", data: Buffer.from(renderManifest(attrs), "utf8") });
    for (const e of zip.entries) {
      let name: string | undefined;
      if (e.name.startsWith("BOOT-INF/classes/")) name = e.name.slice("BOOT-INF/classes/".length);
      else if (e.name.startsWith("META-INF/") && e.name !== "META-INF/" && e.name !== "META-INF/MANIFEST.MF" && !SIGNATURE.test(e.name)) name = e.name;
      if (!name || name === "META-INF/" || name === "META-INF/MANIFEST.MF" || (name === e.name && LOADER_ONLY.has(name))) continue;
      await w.add({ name, raw: await e.readRaw(), method: e.method, crc32: e.crc32, size: e.size, dosTime: e.dosTime, dosDate: e.dosDate });
    }
    await w.finish();
  } catch (err) {
    await w.abort();
    throw err;
  }
}

/** Copies class-path jars into `work`/lib, keeping order; names are made unique if needed. */
export async function copyClassPath(jars: string[], work: string): Promise<{ files: ExtractedFile[]; classPath: string[] }> {
  await mkdir(join(work, "lib"), { recursive: true });
  const used = new Set<string>();
  const files: ExtractedFile[] = [];
  for (const [i, jar] of jars.entries()) {
    let name = basename(jar);
    if (used.has(name)) name = `${i}-${name}`;
    used.add(name);
    const rel = `lib/${name}`;
    await copyFile(jar, join(work, rel));
    files.push({ path: rel, tempPath: join(work, rel) });
  }
  return { files, classPath: files.map((f) => f.path) };
}

/** Reads an agent jar's Premain-Class; refuses jars that are not agents. */
export async function inspectAgentJar(path: string): Promise<{ premainClass: string }> {
  const zip = await openJar(path, "agent");
  try {
    const mf = await readJarManifest(zip);
    const premain = mf.get("Premain-Class");
    if (!premain) {
      throw new ClasscacheError("input", `agent ${path} has no Premain-Class in its manifest, so it is not a Java agent`, {
        hint: "pass the agent's -javaagent jar (for OpenTelemetry: opentelemetry-javaagent.jar)",
      });
    }
    return { premainClass: premain };
  } finally {
    zip.close();
  }
}
