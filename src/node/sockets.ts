/**
 * The agent's Unix sockets for pods: one in the store (`run/agent.sock`, for build Jobs, which
 * mount that directory alone) and one in every scope's view (`scopes/<dir>/run/agent.sock`),
 * because a patched pod sees only its scope's view of the store, and its init step must still
 * be able to say "this node should get my ref". A scope's socket takes only wants, and a want
 * that arrives there is that scope's (see Wants): it can make the node pull only a ref whose
 * signed binding is of the same scope.
 *
 * The kubelet creates a view's directory (hostPath DirectoryOrCreate) when the first patched pod
 * of a scope lands on the node, and setRef creates it when the node gets a ref of the scope. A
 * watch on scopes/ notices either at once; `scan()` (on every want-retry tick) catches what a
 * watch missed, and listens again where a socket file went away.
 */
import { watch, type FSWatcher } from "node:fs";
import { chmod, mkdir, readdir, rm, stat } from "node:fs/promises";
import type { Server } from "node:http";
import { dirname, join } from "node:path";
import { ClasscacheError } from "../runtime/errors.ts";
import type { Logger } from "../runtime/log.ts";
import { aborted, type Runnable } from "../runtime/runnable.ts";
import { RUN_DIR, scopeOfDirName, VIEWS_DIR } from "../store/scopes.ts";

/** Listens on a Unix socket any local process may connect to (mode 0666), replacing one a previous run left. */
export async function listenSocket(server: Server, path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await rm(path, { force: true }); // a socket left by a previous run
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => reject(new ClasscacheError("input", `cannot listen on ${path}`, { cause: err })));
    server.listen(path, () => resolve());
  });
  await chmod(path, 0o666);
}

/** Where the agent listens for the pods of one scope's view. */
export function scopeSocketPath(storeDir: string, viewName: string): string {
  return join(storeDir, VIEWS_DIR, viewName, RUN_DIR, "agent.sock");
}

export class ScopeSockets implements Runnable {
  readonly name = "scope-sockets";
  readonly #store: string;
  readonly #serve: (scope: string) => Server;
  readonly #log: Logger;
  /** By view directory name. */
  readonly #servers = new Map<string, Server>();
  #scan: Promise<void> | undefined;
  #again = false;
  #stopped = false;

  /** `serve(scope)` makes the server for one scope's socket (see createScopeSocketServer). */
  constructor(storeDir: string, serve: (scope: string) => Server, log: Logger) {
    this.#store = storeDir;
    this.#serve = serve;
    this.#log = log;
  }

  async start(signal: AbortSignal): Promise<void> {
    const views = join(this.#store, VIEWS_DIR);
    await mkdir(views, { recursive: true });
    let watcher: FSWatcher | undefined;
    try {
      watcher = watch(views, () => void this.scan());
      watcher.on("error", (err) => this.#log.warn("cannot watch the scopes' views", { error: String(err) }));
    } catch (err) {
      this.#log.warn("cannot watch the scopes' views; rescanning on the want-retry tick only", { error: String(err) });
    }
    await this.scan();
    await aborted(signal);
    watcher?.close();
    this.#stopped = true;
    await this.#scan;
    await Promise.all([...this.#servers.values()].map((s) => new Promise((r) => s.close(r))));
    this.#servers.clear();
  }

  /** Listens in every scope's view that has no socket of ours; stops where a view is gone. Calls made while one runs share the next run. */
  scan(): Promise<void> {
    if (this.#scan) {
      this.#again = true;
      return this.#scan;
    }
    this.#scan = (async () => {
      do {
        this.#again = false;
        await this.#scanOnce().catch((err: unknown) => this.#log.warn("scanning the scopes' views failed", { error: String(err) }));
      } while (this.#again && !this.#stopped);
    })().finally(() => (this.#scan = undefined));
    return this.#scan;
  }

  /** The scopes (view directory names) listened for now. */
  get listening(): string[] {
    return [...this.#servers.keys()].sort();
  }

  async #scanOnce(): Promise<void> {
    if (this.#stopped) return;
    const names = await readdir(join(this.#store, VIEWS_DIR)).catch(() => [] as string[]);
    for (const [name, server] of this.#servers) {
      if (names.includes(name)) continue;
      this.#servers.delete(name);
      server.close();
    }
    for (const name of names) {
      const scope = scopeOfDirName(name);
      if (scope === undefined || this.#stopped) continue;
      const path = scopeSocketPath(this.#store, name);
      const held = this.#servers.get(name);
      if (held && (await stat(path).catch(() => undefined))?.isSocket()) continue;
      if (held) {
        this.#servers.delete(name);
        held.close();
      }
      if (!(await stat(join(this.#store, VIEWS_DIR, name)).catch(() => undefined))?.isDirectory()) continue;
      const server = this.#serve(scope);
      try {
        await listenSocket(server, path);
        this.#servers.set(name, server);
        this.#log.info("listening for a scope's pods", { scope: name });
      } catch (err) {
        server.close();
        this.#log.warn("cannot listen in a scope's view", { scope: name, error: String(err) });
      }
    }
  }
}
