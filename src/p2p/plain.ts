/**
 * A minimal plain file server — no auth, no hashing, no metering — serving one file at every
 * path. The baseline of the distribution benchmark: what `node:http` moves without classcache.
 */
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { pipeline } from "node:stream/promises";

/** Serves `path` on 127.0.0.1:`port` (0 for any free port); resolves once listening. */
export async function servePlainFile(path: string, port: number): Promise<Server> {
  const { size } = await stat(path);
  const server = createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "application/octet-stream", "Content-Length": size });
    if (req.method === "HEAD") {
      res.end();
      return;
    }
    pipeline(createReadStream(path), res).catch(() => res.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  return server;
}
