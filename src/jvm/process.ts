/**
 * One JVM process: spawned with its output teed to a log file, watched for readiness (a log
 * line or an HTTP URL), and stopped gracefully. Every wait has a deadline; a JVM that exits or
 * hangs becomes an error that carries the tail of its output.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, type WriteStream } from "node:fs";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";

export interface StartOptions {
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Every output line (stdout and stderr) is appended here. */
  logFile?: string;
  /** Lines kept in memory for error messages and evidence searches. */
  keepLines?: number;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class ProcessError extends Error {
  readonly tail: string;
  constructor(message: string, tail: string) {
    super(message);
    this.tail = tail;
  }
}

export class JvmProcess {
  readonly pid: number;
  readonly exited: Promise<Exit>;
  private readonly child: ChildProcess;
  private readonly t0: number;
  private readonly lines: string[] = [];
  private readonly keep: number;
  private readonly watchers = new Set<(line: string) => void>();
  private readonly log: WriteStream | undefined;
  private exit: Exit | undefined;

  private constructor(opts: StartOptions) {
    this.t0 = performance.now();
    this.keep = opts.keepLines ?? 400;
    this.log = opts.logFile ? createWriteStream(opts.logFile, { flags: "a" }) : undefined;
    this.child = spawn(opts.command, opts.args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ["ignore", "pipe", "pipe"],
      detached: true, // own process group: a stop reaches any child it forks
    });
    if (this.child.pid === undefined) throw new Error(`cannot start ${opts.command}`);
    this.pid = this.child.pid;
    this.exited = new Promise<Exit>((resolve) => {
      this.child.on("error", () => resolve({ code: 127, signal: null }));
      this.child.on("close", (code, signal) => {
        this.exit = { code, signal };
        this.log?.end();
        resolve(this.exit);
      });
    });
    this.pipe(this.child.stdout!);
    this.pipe(this.child.stderr!);
  }

  static start(opts: StartOptions): JvmProcess {
    return new JvmProcess(opts);
  }

  /** Milliseconds since spawn. */
  elapsedMs(): number {
    return performance.now() - this.t0;
  }

  get running(): boolean {
    return this.exit === undefined;
  }

  tail(n = 40): string {
    return this.lines.slice(-n).join("\n");
  }

  /** All kept lines matching `re`. */
  grep(re: RegExp): string[] {
    return this.lines.filter((l) => re.test(l));
  }

  /** Resolves with the first line (already seen or future) matching `re`, and when it came. */
  async waitForLine(re: RegExp, timeoutMs: number, what = `a line matching ${re}`): Promise<{ line: string; ms: number }> {
    const seen = this.lines.find((l) => re.test(l));
    if (seen) return { line: seen, ms: this.elapsedMs() };
    let watcher: ((l: string) => void) | undefined;
    const found = new Promise<{ line: string; ms: number }>((resolve) => {
      watcher = (line) => {
        if (re.test(line)) resolve({ line, ms: this.elapsedMs() });
      };
      this.watchers.add(watcher);
    });
    try {
      return await this.raceExitAndTimeout(found, timeoutMs, what);
    } finally {
      if (watcher) this.watchers.delete(watcher);
    }
  }

  /** Polls `url` until it answers 2xx. */
  async waitForUrl(url: string, timeoutMs: number): Promise<{ ms: number }> {
    const ac = new AbortController();
    const poll = (async () => {
      while (!ac.signal.aborted) {
        try {
          const res = await fetch(url, { signal: AbortSignal.any([ac.signal, AbortSignal.timeout(2000)]) });
          await res.arrayBuffer();
          if (res.ok) return { ms: this.elapsedMs() };
        } catch {
          /* not up yet */
        }
        await sleep(25, undefined, { signal: ac.signal }).catch(() => {});
      }
      return { ms: this.elapsedMs() };
    })();
    try {
      return await this.raceExitAndTimeout(poll, timeoutMs, `${url} to answer 2xx`);
    } finally {
      ac.abort();
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`. Resolves when the process is gone. */
  async stop(graceMs = 10_000): Promise<Exit> {
    if (this.exit) return this.exit;
    this.signalGroup("SIGTERM");
    const t = setTimeout(() => this.signalGroup("SIGKILL"), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(t);
    }
  }

  kill(): void {
    this.signalGroup("SIGKILL");
  }

  private signalGroup(sig: NodeJS.Signals): void {
    try {
      process.kill(-this.pid, sig);
    } catch {
      try {
        this.child.kill(sig);
      } catch {
        /* already gone */
      }
    }
  }

  private async raceExitAndTimeout<T>(p: Promise<T>, timeoutMs: number, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new ProcessError(`timed out after ${Math.round(timeoutMs / 1000)} s waiting for ${what}`, this.tail())),
        timeoutMs,
      );
    });
    const exited = this.exited.then((e) => {
      throw new ProcessError(`the JVM exited (${describeExit(e)}) before ${what}`, this.tail());
    });
    try {
      return await Promise.race([p, timeout, exited]);
    } finally {
      clearTimeout(timer);
      exited.catch(() => {});
    }
  }

  private pipe(stream: NodeJS.ReadableStream): void {
    let partial = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      this.log?.write(chunk);
      const parts = (partial + chunk).split("\n");
      partial = parts.pop() ?? "";
      for (const line of parts) this.onLine(line);
    });
    stream.on("end", () => {
      if (partial) this.onLine(partial);
      partial = "";
    });
  }

  private onLine(line: string): void {
    this.lines.push(line);
    if (this.lines.length > this.keep) this.lines.splice(0, this.lines.length - this.keep);
    for (const w of this.watchers) w(line);
  }
}

export function describeExit(e: Exit): string {
  return e.signal ? `killed by ${e.signal}` : `exit code ${e.code}`;
}
