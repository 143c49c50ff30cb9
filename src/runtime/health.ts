/**
 * The plain-HTTP port of a long-running process (operator, node agent): /healthz (liveness) and
 * /readyz (readiness) for the kubelet's probes, in the format of the API server's own — 200 "ok" or
 * 500 with one "[+]name ok" / "[-]name failed: …" line per check — and /metrics for Prometheus
 * when a registry is given. Nothing else is served here, so the port can be opened to any scraper.
 * A check returns normally when fine and throws (or returns false) when not.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import type { Logger } from "./log.ts";
import { aborted, type Runnable } from "./runnable.ts";

export type Check = () => boolean | void | Promise<boolean | void>;

export interface HealthServerOptions {
  /** 0 picks a free port (see listening()). */
  port: number;
  host?: string;
  logger: Logger;
  /** Served as /metrics (Prometheus text); without it /metrics is 404. */
  metrics?: Registry;
}

export class HealthServer implements Runnable {
  readonly name = "health-server";
  readonly #opts: HealthServerOptions;
  readonly #checks = { healthz: new Map<string, Check>(), readyz: new Map<string, Check>() };
  #resolvePort: (port: number) => void = () => {};
  readonly #port = new Promise<number>((resolve) => (this.#resolvePort = resolve));

  constructor(opts: HealthServerOptions) {
    this.#opts = opts;
  }

  addHealthCheck(name: string, check: Check): this {
    this.#checks.healthz.set(name, check);
    return this;
  }

  addReadyCheck(name: string, check: Check): this {
    this.#checks.readyz.set(name, check);
    return this;
  }

  /** Resolves with the port once the server listens. */
  listening(): Promise<number> {
    return this.#port;
  }

  async start(signal: AbortSignal): Promise<void> {
    const server = createServer((req, res) => void this.#serve(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.#opts.port, this.#opts.host ?? "0.0.0.0", () => {
        server.off("error", reject);
        resolve();
      });
    });
    const port = (server.address() as AddressInfo).port;
    this.#opts.logger.info("health server listening", { port });
    this.#resolvePort(port);
    await aborted(signal);
    await close(server);
  }

  async #serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? "/", "http://x").pathname.replace(/\/+$/, "");
    if (path === "/metrics" && this.#opts.metrics) {
      try {
        const body = await this.#opts.metrics.metrics();
        res.writeHead(200, { "Content-Type": this.#opts.metrics.contentType }).end(body);
      } catch (err) {
        res.writeHead(500, { "Content-Type": "text/plain" }).end(`metrics failed: ${(err as Error)?.message ?? String(err)}\n`);
      }
      return;
    }
    const checks = path === "/healthz" ? this.#checks.healthz : path === "/readyz" ? this.#checks.readyz : undefined;
    if (!checks) {
      res.writeHead(404, { "Content-Type": "text/plain" }).end("not found\n");
      return;
    }
    const lines: string[] = [];
    let ok = true;
    for (const [name, check] of checks) {
      try {
        if ((await check()) === false) throw new Error("not ready");
        lines.push(`[+]${name} ok`);
      } catch (err) {
        ok = false;
        lines.push(`[-]${name} failed: ${(err as Error)?.message ?? String(err)}`);
      }
    }
    res.writeHead(ok ? 200 : 500, { "Content-Type": "text/plain" });
    res.end(`${lines.join("\n")}${lines.length ? "\n" : ""}${path.slice(1)} ${ok ? "ok" : "failed"}\n`);
  }
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
