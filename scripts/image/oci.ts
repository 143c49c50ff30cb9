/**
 * Writes OCI image-layout archives without a container daemon: each layer is a tar of files
 * laid out by the caller, gzip-compressed, and the archive is what `ctr images import`,
 * `skopeo copy oci-archive:…` and `crane push` read.
 *
 * Reproducible: entries are sorted, owned 0:0 unless told otherwise, timestamped with
 * SOURCE_DATE_EPOCH (0 when unset), and gzip writes no name or time, so the same files give the
 * same digests on any machine.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, existsSync, lstatSync, readdirSync, readlinkSync, realpathSync, statSync } from "node:fs";
import { mkdir, mkdtemp, rename, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, posix, resolve } from "node:path";
import { PassThrough, Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import tar from "tar-stream";

export type Entry =
  | { path: string; type: "dir"; mode?: number; uid?: number; gid?: number }
  | { path: string; type: "file"; mode?: number; uid?: number; gid?: number; source: string }
  | { path: string; type: "file"; mode?: number; uid?: number; gid?: number; data: Buffer | string }
  | { path: string; type: "symlink"; target: string };

export interface ImageConfig {
  Entrypoint?: string[];
  Cmd?: string[];
  Env?: string[];
  User?: string;
  WorkingDir?: string;
  Labels?: Record<string, string>;
}

export interface ImageSpec {
  /** The full reference the image is imported as, e.g. ghcr.io/classcache/classcache:0.1.0. */
  name: string;
  /** GOARCH-style: amd64, arm64. */
  arch: string;
  layers: Entry[][];
  config: ImageConfig;
}

export interface WrittenImage {
  name: string;
  /** The manifest's digest: what a registry would report for this image. */
  digest: string;
  /** Bytes of the archive. */
  size: number;
}

const MEDIA = {
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layer: "application/vnd.oci.image.layer.v1.tar+gzip",
  index: "application/vnd.oci.image.index.v1+json",
} as const;

function epoch(): Date {
  const s = process.env["SOURCE_DATE_EPOCH"];
  return new Date((s && /^\d+$/.test(s) ? Number(s) : 0) * 1000);
}

/** Counts and hashes what passes through. */
function digester(): { stream: Transform; result: () => { digest: string; size: number } } {
  const hash = createHash("sha256");
  let size = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      size += chunk.length;
      done(null, chunk);
    },
  });
  return { stream, result: () => ({ digest: `sha256:${hash.digest("hex")}`, size }) };
}

function normalise(entries: Entry[]): Entry[] {
  const byPath = new Map<string, Entry>();
  for (const e of entries) {
    const p = posix.normalize(e.path).replace(/^\/+/, "").replace(/\/+$/, "");
    if (!p || p === "." || p.startsWith("..")) throw new Error(`image: bad path ${JSON.stringify(e.path)}`);
    // Parents first, so every file's directory exists with a known mode.
    const parts = p.split("/");
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join("/");
      if (!byPath.has(parent)) byPath.set(parent, { path: parent, type: "dir" });
    }
    byPath.set(p, { ...e, path: p });
  }
  return [...byPath.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

async function packLayer(entries: Entry[], mtime: Date, out: PassThrough): Promise<void> {
  const pack = tar.pack();
  const piped = pipeline(pack, out);
  const put = (header: Partial<tar.Header> & Pick<tar.Header, "name">, body?: Buffer | Readable): Promise<void> =>
    new Promise((res, rej) => {
      if (body === undefined || Buffer.isBuffer(body)) {
        pack.entry(header, body ?? Buffer.alloc(0), (err) => (err ? rej(err) : res()));
        return;
      }
      const sink = pack.entry(header, (err) => (err ? rej(err) : res()));
      body.pipe(sink);
      body.on("error", rej);
    });
  for (const e of normalise(entries)) {
    const owner = e.type === "symlink" ? { uid: 0, gid: 0 } : { uid: e.uid ?? 0, gid: e.gid ?? 0 };
    const common = { name: e.path, mtime, ...owner, uname: "", gname: "" };
    if (e.type === "dir") await put({ ...common, type: "directory", mode: e.mode ?? 0o755 });
    else if (e.type === "symlink") await put({ ...common, type: "symlink", linkname: e.target, mode: 0o777 });
    else if ("data" in e) {
      const data = Buffer.from(e.data);
      await put({ ...common, type: "file", mode: e.mode ?? 0o644, size: data.length }, data);
    } else {
      const size = statSync(e.source).size;
      await put({ ...common, type: "file", mode: e.mode ?? (statSync(e.source).mode & 0o111 ? 0o755 : 0o644), size }, createReadStream(e.source));
    }
  }
  pack.finalize();
  await piped;
}

/** Writes one gzip layer into blobs/ and returns its descriptor and diff ID. */
async function writeLayer(blobs: string, entries: Entry[], mtime: Date): Promise<{ digest: string; size: number; diffId: string }> {
  const tmp = join(blobs, `.layer-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const raw = digester();
  const gz = digester();
  const source = new PassThrough({ highWaterMark: 1 << 20 });
  await Promise.all([packLayer(entries, mtime, source), pipeline(source, raw.stream, createGzip({ level: 6 }), gz.stream, createWriteStream(tmp))]);
  const { digest, size } = gz.result();
  await rename(tmp, join(blobs, digest.slice("sha256:".length)));
  return { digest, size, diffId: raw.result().digest };
}

/**
 * The fully qualified form of an image reference, as the kubelet asks containerd for it:
 * valkey/valkey:8 → docker.io/valkey/valkey:8, busybox:1 → docker.io/library/busybox:1.
 */
export function qualifiedName(ref: string): string {
  const slash = ref.indexOf("/");
  const first = slash < 0 ? "" : ref.slice(0, slash);
  if (slash >= 0 && (first.includes(".") || first.includes(":") || first === "localhost")) return ref;
  return slash < 0 ? `docker.io/library/${ref}` : `docker.io/${ref}`;
}

/** Writes an OCI image-layout archive (a tar) at `out`; replaces it atomically. */
export async function writeImage(spec: ImageSpec, out: string): Promise<WrittenImage> {
  const mtime = epoch();
  const work = await mkdtemp(join(tmpdir(), "classcache-image-"));
  try {
    const blobs = join(work, "blobs", "sha256");
    await mkdir(blobs, { recursive: true });
    const layers = [];
    for (const l of spec.layers) layers.push(await writeLayer(blobs, l, mtime));
    const blob = async (data: string): Promise<{ digest: string; size: number }> => {
      const buf = Buffer.from(data);
      const digest = `sha256:${createHash("sha256").update(buf).digest("hex")}`;
      await writeFile(join(blobs, digest.slice(7)), buf);
      return { digest, size: buf.length };
    };
    const config = await blob(
      JSON.stringify({
        created: mtime.toISOString(),
        architecture: spec.arch,
        os: "linux",
        config: spec.config,
        rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
        history: layers.map(() => ({ created: mtime.toISOString(), created_by: "classcache scripts/image" })),
      }),
    );
    const manifest = await blob(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MEDIA.manifest,
        config: { mediaType: MEDIA.config, ...config },
        layers: layers.map((l) => ({ mediaType: MEDIA.layer, digest: l.digest, size: l.size })),
      }),
    );
    const tag = spec.name.slice(spec.name.lastIndexOf(":") + 1);
    const index = {
      schemaVersion: 2,
      mediaType: MEDIA.index,
      manifests: [
        {
          mediaType: MEDIA.manifest,
          ...manifest,
          platform: { architecture: spec.arch, os: "linux" },
          annotations: { "io.containerd.image.name": qualifiedName(spec.name), "org.opencontainers.image.ref.name": tag },
        },
      ],
    };
    const files: Entry[] = [
      { path: "oci-layout", type: "file", data: JSON.stringify({ imageLayoutVersion: "1.0.0" }) },
      { path: "index.json", type: "file", data: JSON.stringify(index) },
      ...readdirSync(blobs).map((f): Entry => ({ path: `blobs/sha256/${f}`, type: "file", source: join(blobs, f), mode: 0o644 })),
    ];
    const tmpOut = `${resolve(out)}.tmp-${process.pid}`;
    const pass = new PassThrough({ highWaterMark: 1 << 20 });
    await Promise.all([packLayer(files, mtime, pass), pipeline(pass, createWriteStream(tmpOut))]);
    await rename(tmpOut, out);
    return { name: spec.name, digest: manifest.digest, size: (await stat(out)).size };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/**
 * A directory tree as layer entries under `dest`. A symbolic link that stays inside the tree is
 * kept; one that leaves it is followed (the image has nothing outside the tree to point at); a
 * dangling one is left out.
 */
export function treeEntries(src: string, dest: string, opts: { uid?: number; gid?: number; exclude?: (rel: string) => boolean } = {}): Entry[] {
  const root = realpathSync(src);
  const out: Entry[] = [];
  const owner = { ...(opts.uid !== undefined ? { uid: opts.uid } : {}), ...(opts.gid !== undefined ? { gid: opts.gid } : {}) };
  const walk = (dir: string, rel: string, seen: Set<string>): void => {
    for (const name of readdirSync(dir).sort()) {
      const abs = join(dir, name);
      const r = rel ? `${rel}/${name}` : name;
      if (opts.exclude?.(r)) continue;
      const target = posix.join(dest, r);
      let st = lstatSync(abs);
      if (st.isSymbolicLink()) {
        let resolved: string;
        try {
          resolved = realpathSync(abs);
        } catch {
          continue; // a dangling link: nothing to put in the image
        }
        const inside = resolved === root || resolved.startsWith(`${root}/`);
        if (inside) {
          out.push({ path: target, type: "symlink", target: readlinkSync(abs) });
          continue;
        }
        st = statSync(abs);
        if (st.isDirectory()) {
          if (seen.has(resolved)) continue;
          out.push({ path: target, type: "dir", mode: st.mode & 0o7777, ...owner });
          walk(resolved, r, new Set([...seen, resolved]));
          continue;
        }
        if (st.isFile()) out.push({ path: target, type: "file", source: resolved, mode: st.mode & 0o7777, ...owner });
        continue;
      }
      if (st.isDirectory()) {
        out.push({ path: target, type: "dir", mode: st.mode & 0o7777, ...owner });
        walk(abs, r, seen);
      } else if (st.isFile()) {
        out.push({ path: target, type: "file", source: abs, mode: st.mode & 0o7777, ...owner });
      }
    }
  };
  walk(root, "", new Set([root]));
  return out;
}

/** The shared libraries `ldd` lists for these binaries (path → path), and the ELF interpreter. */
export async function sharedLibraries(binaries: string[]): Promise<{ libs: string[]; interpreter: string | undefined }> {
  const libs = new Set<string>();
  let interpreter: string | undefined;
  for (const b of binaries) {
    const text = await new Promise<string>((res) => execFile("ldd", [b], (_err, stdout) => res(String(stdout ?? ""))));
    for (const line of text.split("\n")) {
      const m = /^\s*(\S+)\s+=>\s+(\/\S+)\s+\(/.exec(line);
      if (m) libs.add(m[2]!);
      const i = /^\s*(\/\S+ld-linux\S*)\s+\(/.exec(line);
      if (i) interpreter = i[1]!;
    }
  }
  return { libs: [...libs].sort(), interpreter };
}

/** The file entries that put these host files at the same paths in the image (links followed). */
export function hostFiles(paths: string[]): Entry[] {
  return paths.map((p): Entry => ({ path: p, type: "file", source: realpathSync(p), mode: statSync(p).mode & 0o777 }));
}

/** The non-root user images run as unless a pod says otherwise. */
export const NONROOT = 65532;
const BUSYBOX = "/bin/busybox";

/** What every image here has: /tmp, and a root and a non-root user (with a home) by name. */
export function baseEntries(): Entry[] {
  return [
    { path: "tmp", type: "dir", mode: 0o1777 },
    { path: "etc/passwd", type: "file", data: `root:x:0:0:root:/root:/bin/sh\nnonroot:x:${NONROOT}:${NONROOT}:nonroot:/home/nonroot:/bin/sh\n` },
    { path: "etc/group", type: "file", data: `root:x:0:\nnonroot:x:${NONROOT}:\n` },
    { path: "home/nonroot", type: "dir", mode: 0o755, uid: NONROOT, gid: NONROOT },
  ];
}

/** Debian's static busybox at /bin/busybox, and only these applets of it linked in /bin. */
export function busyboxEntries(applets: string[]): Entry[] {
  if (!existsSync(BUSYBOX)) throw new Error(`image: ${BUSYBOX} is missing (apt-get install busybox-static)`);
  return [{ path: "bin/busybox", type: "file", source: BUSYBOX, mode: 0o755 }, ...applets.map((a): Entry => ({ path: `bin/${a}`, type: "symlink", target: "busybox" }))];
}
