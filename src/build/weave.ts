/**
 * Weaving: copies of jars in which the classes an agent transformed during training are
 * replaced by their transformed bytes. A stock archive built over the woven jars carries the
 * instrumentation on JDKs that drop agent-transformed classes from archives (25+).
 */
import { link, mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Layout } from "../archive/manifest.ts";
import { openZip, ZipWriter } from "../util/zip.ts";
import type { ExtractedFile } from "./extract.ts";

const SIGNATURE = /^META-INF\/[^/]+\.(SF|RSA|DSA|EC)$/i;

export interface WeaveResult {
  files: ExtractedFile[];
  wovenClasses: number;
  wovenJars: string[];
  /** Signed jars whose signature had to be dropped. */
  unsigned: string[];
}

/**
 * Prepares the files of a woven layout in `work`: each jar of `layout` with captured classes
 * is rewritten, every other file is linked unchanged.
 * @param layoutDir the layout's directory as the training JVM saw it (to map captured jar paths)
 */
export async function weaveLayout(
  layout: Layout,
  layoutDir: string,
  blobPath: (sha: string) => string,
  captured: Map<string, Map<string, string>>,
  work: string,
): Promise<WeaveResult> {
  const files: ExtractedFile[] = [];
  const wovenJars: string[] = [];
  const unsigned: string[] = [];
  let wovenClasses = 0;
  await mkdir(work, { recursive: true });
  for (const [i, f] of layout.files.entries()) {
    const out = join(work, `${i}`);
    const replacements = captured.get(join(layoutDir, f.path));
    if (!replacements || replacements.size === 0) {
      await link(blobPath(f.sha256), out);
      files.push({ path: f.path, tempPath: out });
      continue;
    }
    const zip = await openZip(blobPath(f.sha256));
    const w = await ZipWriter.create(out);
    let signed = false;
    try {
      for (const e of zip.entries) {
        if (SIGNATURE.test(e.name)) {
          signed = true;
          continue; // a rewritten class would fail the signature check
        }
        const replacement = replacements.get(e.name);
        if (replacement) {
          await w.add({ name: e.name, data: await readFile(replacement), dosTime: e.dosTime, dosDate: e.dosDate });
          wovenClasses++;
        } else {
          await w.add({ name: e.name, raw: await e.readRaw(), method: e.method, crc32: e.crc32, size: e.size, dosTime: e.dosTime, dosDate: e.dosDate });
        }
      }
      await w.finish();
    } catch (err) {
      await w.abort();
      throw err;
    } finally {
      zip.close();
    }
    if (signed) unsigned.push(f.path);
    wovenJars.push(f.path);
    files.push({ path: f.path, tempPath: out });
  }
  return { files, wovenClasses, wovenJars, unsigned };
}
