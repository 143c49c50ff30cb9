/**
 * Just enough zip for jars: read entries (with yauzl), and write a jar whose entries are
 * copied raw — compressed bytes, CRC and DOS time taken verbatim from a source — or stored
 * uncompressed. No recompression happens, so the output bytes depend only on the inputs,
 * never on the zlib build of the machine that wrote them.
 */
import type { FileHandle } from "node:fs/promises";
import { open } from "node:fs/promises";
import type { Readable } from "node:stream";
import { crc32 } from "node:zlib";
import yauzl from "yauzl";

export interface ZipEntry {
  name: string;
  method: number; // 0 stored, 8 deflated
  crc32: number;
  compressedSize: number;
  size: number;
  dosTime: number;
  dosDate: number;
  isDirectory: boolean;
  /** Raw (still compressed) bytes, as stored in the zip. */
  readRaw(): Promise<Buffer>;
  /** Decompressed bytes. */
  read(): Promise<Buffer>;
  /** Decompressed stream, for large entries. */
  stream(): Promise<Readable>;
}

export interface ZipReader {
  entries: ZipEntry[];
  get(name: string): ZipEntry | undefined;
  close(): void;
}

export class ZipFormatError extends Error {}

export async function openZip(path: string): Promise<ZipReader> {
  const zip = await new Promise<yauzl.ZipFile>((resolve, reject) => {
    yauzl.open(path, { lazyEntries: true, autoClose: false, strictFileNames: false }, (err, z) =>
      err ? reject(new ZipFormatError(err.message)) : resolve(z),
    );
  });
  const entries: ZipEntry[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      zip.on("entry", (e: yauzl.Entry) => {
        entries.push(wrapEntry(zip, e));
        zip.readEntry();
      });
      zip.on("end", () => resolve());
      zip.on("error", (err: Error) => reject(new ZipFormatError(err.message)));
      zip.readEntry();
    });
  } catch (err) {
    zip.close();
    throw err;
  }
  const byName = new Map(entries.map((e) => [e.name, e]));
  return { entries, get: (n) => byName.get(n), close: () => zip.close() };
}

function wrapEntry(zip: yauzl.ZipFile, e: yauzl.Entry): ZipEntry {
  const openStream = (decode: boolean) =>
    new Promise<Readable>((resolve, reject) => {
      // Default options decode; yauzl 3.4 mishandles an explicit `decodeFileData: true`.
      zip.openReadStream(e, decode ? {} : { decodeFileData: false }, (err, s) => (err ? reject(new ZipFormatError(err.message)) : resolve(s)));
    });
  const collect = async (s: Readable) => {
    const parts: Buffer[] = [];
    for await (const c of s) parts.push(c as Buffer);
    return Buffer.concat(parts);
  };
  return {
    name: e.fileName,
    method: e.compressionMethod,
    crc32: e.crc32,
    compressedSize: e.compressedSize,
    size: e.uncompressedSize,
    dosTime: e.lastModFileTime,
    dosDate: e.lastModFileDate,
    isDirectory: e.fileName.endsWith("/"),
    readRaw: async () => collect(await openStream(false)),
    read: async () => collect(await openStream(true)),
    stream: () => openStream(true),
  };
}

/** An entry to write: raw compressed bytes from a source entry, or plain bytes stored as-is. */
export type WriteEntry =
  | { name: string; raw: Buffer; method: number; crc32: number; size: number; dosTime: number; dosDate: number }
  | { name: string; data: Buffer; dosTime?: number; dosDate?: number };

/** 1980-01-01 00:00, the earliest DOS time: used for entries we create ourselves. */
export const DOS_EPOCH = { dosTime: 0, dosDate: (0 << 9) | (1 << 5) | 1 };

const MAX16 = 0xffff;
const MAX32 = 0xffffffff;

/** Writes a zip to an open file handle, entry by entry, then the central directory. */
export class ZipWriter {
  private readonly fh: FileHandle;
  private offset = 0;
  private readonly central: Buffer[] = [];
  private count = 0;

  private constructor(fh: FileHandle) {
    this.fh = fh;
  }

  static async create(path: string): Promise<ZipWriter> {
    return new ZipWriter(await open(path, "wx", 0o644));
  }

  async add(entry: WriteEntry): Promise<void> {
    const name = Buffer.from(entry.name, "utf8");
    const isRaw = "raw" in entry;
    const body = isRaw ? entry.raw : entry.data;
    const method = isRaw ? entry.method : 0;
    const crc = isRaw ? entry.crc32 : crc32(entry.data) >>> 0;
    const size = isRaw ? entry.size : entry.data.length;
    const dosTime = entry.dosTime ?? DOS_EPOCH.dosTime;
    const dosDate = entry.dosDate ?? DOS_EPOCH.dosDate;
    if (body.length > MAX32 || size > MAX32 || this.offset > MAX32 || this.count >= MAX16) {
      throw new ZipFormatError(`zip64 output is not supported (entry ${entry.name})`);
    }
    const flags = /[^\x20-\x7e]/.test(entry.name) ? 0x0800 : 0; // UTF-8 names
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(flags, 6);
    local.writeUInt16LE(method, 8);
    local.writeUInt16LE(dosTime, 10);
    local.writeUInt16LE(dosDate, 12);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(body.length, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    const cen = Buffer.alloc(46);
    cen.writeUInt32LE(0x02014b50, 0);
    cen.writeUInt16LE(20, 4);
    cen.writeUInt16LE(20, 6);
    cen.writeUInt16LE(flags, 8);
    cen.writeUInt16LE(method, 10);
    cen.writeUInt16LE(dosTime, 12);
    cen.writeUInt16LE(dosDate, 14);
    cen.writeUInt32LE(crc, 16);
    cen.writeUInt32LE(body.length, 20);
    cen.writeUInt32LE(size, 24);
    cen.writeUInt16LE(name.length, 28);
    cen.writeUInt32LE(entry.name.endsWith("/") ? 0x10 : 0, 38);
    cen.writeUInt32LE(this.offset, 42);
    this.central.push(cen, name);
    await this.write(Buffer.concat([local, name]));
    await this.write(body);
    this.count++;
  }

  /** Writes the central directory, fsyncs and closes. */
  async finish(): Promise<void> {
    const start = this.offset;
    const dir = Buffer.concat(this.central);
    await this.write(dir);
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(this.count, 8);
    end.writeUInt16LE(this.count, 10);
    end.writeUInt32LE(dir.length, 12);
    end.writeUInt32LE(start, 16);
    await this.write(end);
    await this.fh.sync();
    await this.fh.close();
  }

  async abort(): Promise<void> {
    await this.fh.close().catch(() => {});
  }

  private async write(buf: Buffer): Promise<void> {
    let done = 0;
    while (done < buf.length) {
      const { bytesWritten } = await this.fh.write(buf, done, buf.length - done);
      done += bytesWritten;
    }
    this.offset += buf.length;
  }
}

/** Reads a jar's manifest into a map of main attributes (continuation lines joined). */
export function parseManifest(text: string): Map<string, string> {
  const attrs = new Map<string, string>();
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  let lastKey: string | undefined;
  for (const line of lines) {
    if (line === "") {
      if (attrs.size > 0) break; // end of the main section
      continue;
    }
    if (line.startsWith(" ") && lastKey !== undefined) {
      attrs.set(lastKey, (attrs.get(lastKey) ?? "") + line.slice(1));
      continue;
    }
    const i = line.indexOf(":");
    if (i <= 0) continue;
    lastKey = line.slice(0, i).trim();
    attrs.set(lastKey, line.slice(i + 1).trim());
  }
  return attrs;
}

/** Renders manifest main attributes with 72-byte line wrapping, as the JDK's jar tool does. */
export function renderManifest(attrs: [string, string][]): string {
  const out: string[] = [];
  for (const [k, v] of attrs) {
    const line = Buffer.from(`${k}: ${v}`, "utf8");
    let pos = 0;
    let first = true;
    while (pos < line.length) {
      const width = first ? 72 : 71;
      let end = Math.min(pos + width, line.length);
      while (end < line.length && end > pos && (line[end]! & 0xc0) === 0x80) end--; // don't split UTF-8
      out.push((first ? "" : " ") + line.subarray(pos, end).toString("utf8"));
      pos = end;
      first = false;
    }
  }
  return out.join("\r\n") + "\r\n\r\n";
}
