/**
 * A real redis-server (or valkey-server) for tests: password-protected, bound to one loopback
 * address, persisting every write to an append-only file (fsync always, no RDB snapshots) in a
 * directory of its own, so a restart or a crash loses nothing that was acknowledged.
 *
 * The settings go into <dir>/redis.conf (mode 0600) rather than the command line, which keeps the
 * password out of `ps`. Each start logs to <dir>/redis-server.<n>.log.
 */
import { constants } from "node:fs";
import { access, mkdir, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { delimiter, join, resolve } from "node:path";
import { startServerProcess, stopProcessGroup, waitUntilReady, signalGroup, isAlive, type ServerProcess } from "./processes.ts";
import { freePort } from "../jvm/launch.ts";

export interface RedisOptions {
  /** Data directory (created if missing): the append-only file, config and logs live here. */
  dir: string;
  password: string;
  /** TCP port; a free one when omitted. */
  port?: number;
  /** Address to bind, 127.0.0.1 unless told (e.g. 127.0.0.2). */
  host?: string;
  /** How long to wait for the server to answer PING (default 20 s). */
  readyTimeoutMs?: number;
}

export interface RunningRedis {
  /** redis://:<password>@<host>:<port>/0 */
  url: string;
  host: string;
  port: number;
  password: string;
  dir: string;
  /** Process id of the current server process. */
  pid(): number;
  /** Graceful shutdown (SIGTERM: the server flushes the append-only file and exits). Idempotent. */
  stop(): Promise<void>;
  /** Stops the server if it runs, then starts it again on the same address, port and directory. */
  restart(): Promise<void>;
  /** SIGKILL, as a crash would. */
  kill(): Promise<void>;
}

const BINARIES = ["redis-server", "valkey-server"];
const INSTALL_HINT = "install redis-server (scripts/setup.sh does)";

export async function startRedis(opts: RedisOptions): Promise<RunningRedis> {
  const binary = await findServerBinary();
  const host = opts.host ?? "127.0.0.1";
  const dir = resolve(opts.dir);
  await mkdir(dir, { recursive: true });
  const port = opts.port ?? (await freePort(host));
  const conf = join(dir, "redis.conf");
  await writeFile(conf, configText({ host, port, dir, password: opts.password }), { mode: 0o600 });
  const readyTimeoutMs = opts.readyTimeoutMs ?? 20_000;

  let starts = 0;
  let current: ServerProcess | undefined;
  const start = async (): Promise<void> => {
    starts++;
    const server = startServerProcess("redis-server", binary, [conf], join(dir, `redis-server.${starts}.log`));
    current = server;
    try {
      await waitUntilReady(server, readyTimeoutMs, () => pingWithAuth(host, port, opts.password));
    } catch (err) {
      await stopProcessGroup(server.pid, 2_000);
      current = undefined;
      throw err;
    }
  };
  const stop = async (): Promise<void> => {
    const server = current;
    current = undefined;
    if (server) await stopProcessGroup(server.pid);
  };

  await start();
  return {
    url: `redis://:${encodeURIComponent(opts.password)}@${host}:${port}/0`,
    host,
    port,
    password: opts.password,
    dir,
    pid: () => current?.pid ?? 0,
    stop,
    restart: async () => {
      await stop();
      await start();
    },
    kill: async () => {
      const server = current;
      current = undefined;
      if (!server) return;
      signalGroup(server.pid, "SIGKILL");
      const deadline = Date.now() + 5_000;
      while (isAlive(server.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    },
  };
}

/** The first redis-server (or valkey-server) on PATH. */
export async function findServerBinary(): Promise<string> {
  const dirs = (process.env["PATH"] ?? "").split(delimiter).filter(Boolean);
  for (const name of BINARIES) {
    for (const d of dirs) {
      const candidate = join(d, name);
      try {
        await access(candidate, constants.X_OK);
        return candidate;
      } catch {
        /* not here */
      }
    }
  }
  throw new Error(`redis-server not found on PATH: ${INSTALL_HINT}`);
}

function configText(o: { host: string; port: number; dir: string; password: string }): string {
  const quote = (s: string): string => `"${s.replace(/["\\]/g, "\\$&")}"`;
  return [
    `bind ${o.host}`,
    `port ${o.port}`,
    `requirepass ${quote(o.password)}`,
    `dir ${quote(o.dir)}`,
    "appendonly yes",
    "appendfsync always",
    'save ""',
    "daemonize no",
    'logfile ""',
    "",
  ].join("\n");
}


function bulk(s: string): string {
  return `$${Buffer.byteLength(s)}\r\n${s}\r\n`;
}

/**
 * AUTH + PING over a raw socket: resolves true once the server answers +OK and +PONG, undefined
 * while it refuses, loads its data or is not listening yet.
 */
function pingWithAuth(host: string, port: number, password: string): Promise<true | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    let reply = "";
    const done = (value: true | undefined): void => {
      socket.destroy();
      resolve(value);
    };
    socket.setTimeout(1_000, () => done(undefined));
    socket.on("error", () => done(undefined));
    socket.on("connect", () => socket.write(`*2\r\n${bulk("AUTH")}${bulk(password)}*1\r\n${bulk("PING")}`));
    socket.on("data", (chunk) => {
      reply += chunk.toString("utf8");
      const lines = reply.split("\r\n");
      if (lines.length < 3) return;
      done(lines[0] === "+OK" && lines[1] === "+PONG" ? true : undefined);
    });
  });
}
