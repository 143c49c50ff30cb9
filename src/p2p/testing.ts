/** Helpers for tests of peer distribution: real servers on loopback, real files, raw requests. */
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { open } from "node:fs/promises";
import { request, type IncomingHttpHeaders, type Server } from "node:http";
import { connect, type AddressInfo } from "node:net";
import { createLogger, type Logger } from "../runtime/log.ts";
import { sha256File } from "../util/hash.ts";
import type { BlobSource } from "./server.ts";

/** Writes `size` random bytes to `path`; returns their sha256. */
export async function randomFile(path: string, size: number): Promise<string> {
  const fh = await open(path, "wx");
  try {
    for (let off = 0; off < size; off += 1 << 20) await fh.write(randomBytes(Math.min(1 << 20, size - off)));
  } finally {
    await fh.close();
  }
  return (await sha256File(path)).sha256;
}

/** A BlobSource over fixed files, counting how often it was asked. */
export function mapSource(files: Record<string, string>): BlobSource & { opens: number } {
  const src = {
    opens: 0,
    async open(sha256: string) {
      src.opens++;
      const path = files[sha256];
      if (!path) return undefined;
      const fh = await open(path, "r");
      try {
        return { path, size: (await fh.stat()).size };
      } finally {
        await fh.close();
      }
    },
  };
  return src;
}

/** A logger that keeps its JSON lines, parsed. */
export function memoryLogger(): { log: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  return { log: createLogger({ level: "debug", format: "json", write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>) }), lines };
}

export async function listen(server: Server): Promise<string> {
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Stops a server now, dropping open connections. */
export async function stop(server: Server): Promise<void> {
  if (!server.listening) return;
  const closed = once(server, "close");
  server.close();
  server.closeAllConnections();
  await closed;
}

export interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** One request with the path sent exactly as given (no URL normalisation), body collected. */
export function get(base: string, path: string, opts: { method?: string; headers?: Record<string, string> } = {}): Promise<RawResponse> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path, method: opts.method ?? "GET", headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end();
  });
}

/** Starts a download and never reads its body, so the server keeps an upload slot until `close()`. */
export function holdDownload(base: string, path: string, headers: Record<string, string>): Promise<{ status: number; close(): void }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path, headers, agent: false }, (res) => {
      res.pause();
      resolve({ status: res.statusCode ?? 0, close: () => req.destroy() });
    });
    req.on("error", (err) => reject(err));
    req.end();
  });
}

/** Sends raw bytes as a request (request line and headers as written) and returns the status line's code and the body. */
export async function rawRequest(base: string, text: string): Promise<{ status: number; body: string }> {
  const url = new URL(base);
  const socket = connect(Number(url.port), url.hostname);
  await once(socket, "connect");
  socket.end(text);
  const chunks: Buffer[] = [];
  socket.on("data", (c: Buffer) => chunks.push(c));
  await once(socket, "close");
  const all = Buffer.concat(chunks).toString("latin1");
  const m = /^HTTP\/1\.1 (\d{3})/.exec(all);
  const sep = all.indexOf("\r\n\r\n");
  return { status: m ? Number(m[1]) : 0, body: sep < 0 ? "" : all.slice(sep + 4) };
}

/** Polls `check` until it holds or `ms` pass. */
export async function until(check: () => boolean | Promise<boolean>, ms = 10_000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
