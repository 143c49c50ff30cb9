/**
 * Turning a manifest's launch description into a command line, and running it where the JVM
 * must see the store: at the store's own path, or — for JDKs that cannot relocate a class
 * path (before 19) — at a fixed root, bind-mounted in a private mount namespace, which is what
 * a container with the node's store mounted at that path sees.
 */
import { createServer } from "node:net";
import { join } from "node:path";
import type { Launch } from "../archive/manifest.ts";
import { ROOT_PLACEHOLDER } from "../archive/manifest.ts";

export interface PathView {
  /** The store directory on this machine. */
  store: string;
  /** Where the JVM sees the store; equal to `store` unless a namespace maps it elsewhere. */
  root: string;
  readOnly?: boolean;
}

export function fillRoot(s: string, root: string): string {
  return s.replaceAll(ROOT_PLACEHOLDER, root);
}

/** `-jar app.jar` or `-cp a.jar:b.jar Main`, with paths under the layout directory. */
export function launchArgs(launch: Launch, root: string): string[] {
  if (launch.kind === "jar") return ["-jar", join(root, launch.jar)];
  return ["-cp", launch.classPath.map((p) => join(root, p)).join(":"), launch.mainClass];
}

/** The process to spawn for `java args` under a path view. */
export function viewCommand(java: string, args: string[], view: PathView): { command: string; args: string[] } {
  if (view.root === view.store) return { command: java, args };
  const ro = view.readOnly ? ' && mount -o remount,bind,ro "$1"' : "";
  const script = `mkdir -p "$1" && mount --bind "$2" "$1"${ro} && shift 2 && exec "$@"`;
  return { command: "unshare", args: ["--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "sh", view.root, view.store, java, ...args] };
}

/** An environment without the variables through which a JVM picks up options on its own. */
export function cleanJvmEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.JAVA_TOOL_OPTIONS;
  delete env.JDK_JAVA_OPTIONS;
  delete env._JAVA_OPTIONS;
  return { ...env, ...extra };
}

export async function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === "object" && addr ? resolve(addr.port) : reject(new Error("no port"))));
    });
  });
}
