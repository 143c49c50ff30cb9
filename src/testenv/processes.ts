/**
 * The server processes of the test environment. Each runs in its own process group with its
 * output going straight to a log file (no pipes), so it can outlive the Node process that started
 * it (the CLI's `up`) and a stop reaches everything it forks.
 */
import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { createServer, type AddressInfo, type Server as NetServer } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

export interface ServerProcess {
  readonly name: string;
  readonly pid: number;
  readonly logFile: string;
  /** Why the process ended ("exited with code 1"), or undefined while it runs. */
  exitReason(): string | undefined;
}

export function startServerProcess(name: string, command: string, args: string[], logFile: string): ServerProcess {
  const fd = openSync(logFile, "w");
  let reason: string | undefined;
  try {
    const child = spawn(command, args, { stdio: ["ignore", fd, fd], detached: true });
    child.on("error", (err) => (reason = `failed: ${err.message}`));
    if (child.pid === undefined) throw new Error(`cannot start ${name} (${command})`);
    child.on("exit", (code, signal) => (reason = signal ? `was killed by ${signal}` : `exited with code ${code}`));
    child.unref();
    return { name, pid: child.pid, logFile, exitReason: () => reason };
  } finally {
    closeSync(fd);
  }
}

export function logTail(logFile: string, lines = 30): string {
  try {
    const text = readFileSync(logFile, "utf8").trimEnd();
    return text ? text.split("\n").slice(-lines).join("\n") : "(log is empty)";
  } catch {
    return "(no log)";
  }
}

/**
 * Polls `probe` until it returns a value. Fails early if the process exits, and after `timeoutMs`
 * with the tail of its log. `lastProblem` is shown in the timeout error when set.
 */
export async function waitUntilReady<T>(
  server: ServerProcess,
  timeoutMs: number,
  probe: () => Promise<T | undefined>,
  lastProblem: () => string | undefined = () => undefined,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const exited = server.exitReason();
    if (exited) {
      throw new Error(`${server.name} ${exited} before becoming ready; last log lines:\n${logTail(server.logFile)}`);
    }
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) {
      const problem = lastProblem();
      throw new Error(
        `${server.name} did not become ready in ${Math.round(timeoutMs / 1000)} s` +
          (problem ? ` (last answer: ${problem})` : "") +
          `; last log lines:\n${logTail(server.logFile)}`,
      );
    }
    await sleep(200);
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie still answers kill(0); it is gone for our purposes.
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return true;
  }
}

/** True when /proc shows that `pid` runs a binary whose name ends with `binaryName` (or /proc is unavailable). */
export function pidRuns(pid: number, binaryName: string): boolean {
  try {
    const argv0 = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0] ?? "";
    return argv0.endsWith(binaryName);
  } catch {
    return isAlive(pid);
  }
}

export function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      /* already gone */
    }
  }
}

async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

/** SIGTERM to the process group, SIGKILL after `graceMs`; resolves once the process is gone. */
export async function stopProcessGroup(pid: number, graceMs = 10_000): Promise<void> {
  if (!isAlive(pid)) {
    signalGroup(pid, "SIGKILL"); // anything the leader left behind
    return;
  }
  signalGroup(pid, "SIGTERM");
  if (await waitGone(pid, graceMs)) return;
  signalGroup(pid, "SIGKILL");
  if (!(await waitGone(pid, 5_000))) throw new Error(`process ${pid} did not exit after SIGKILL`);
}

/** `count` distinct free TCP ports on 127.0.0.1 (held open together so they differ). */
export async function freeLoopbackPorts(count: number): Promise<number[]> {
  const servers: NetServer[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, "127.0.0.1", resolve);
      });
    }
    return servers.map((s) => (s.address() as AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  }
}
