/**
 * The embedded directory: a MemoryDirectory served over HTTP on this machine, for node agents
 * (in other processes) to share when there is no Valkey. They reach it with HttpDirectory and
 * the same token.
 */
import type { AddressInfo } from "node:net";
import type { Logger } from "../runtime/log.ts";
import { createDirectoryServer } from "./http.ts";
import { MemoryDirectory } from "./memory.ts";

export interface EmbeddedDirectoryOptions {
  /** Address to listen on (default 127.0.0.1). */
  host?: string;
  /** Port (default: a free one). */
  port?: number;
  /** Bearer token the clients must present. */
  token: string;
  log?: Logger;
}

export interface EmbeddedDirectory {
  /** http://<host>:<port>, for HttpDirectory. */
  url: string;
  /** The directory itself, for use in this process. */
  directory: MemoryDirectory;
  /** Stops serving (pending long polls answer []) and closes the directory. */
  close(): Promise<void>;
}

export async function serveEmbeddedDirectory(opts: EmbeddedDirectoryOptions): Promise<EmbeddedDirectory> {
  const directory = new MemoryDirectory();
  const server = createDirectoryServer(directory, { token: opts.token, ...(opts.log ? { log: opts.log } : {}) });
  const host = opts.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const urlHost = host.includes(":") ? `[${host}]` : host;
  return {
    url: `http://${urlHost}:${port}`,
    directory,
    close: async () => {
      await server.shutdown();
      await directory.close();
    },
  };
}
