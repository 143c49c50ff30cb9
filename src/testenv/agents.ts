/** Node agents as real, separate processes on their own loopback addresses, for tests and benchmarks. */
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

const CLI = join(import.meta.dirname, "..", "cli.ts");

export interface AgentSpec {
  name: string;
  address: string;
  zone?: string;
  store: string;
  directory: string;
  tokenFile: string;
  trust: string;
  signingKey?: string;
  /** JDKs builds asked of its local API may use (--jdk). */
  jdks?: string[];
  args?: string[];
  logDir: string;
}

export class Agent {
  readonly spec: AgentSpec;
  child: ChildProcess;
  readonly token: string;

  private constructor(spec: AgentSpec, child: ChildProcess, token: string) {
    this.spec = spec;
    this.child = child;
    this.token = token;
  }

  static async start(spec: AgentSpec): Promise<Agent> {
    await mkdir(spec.store, { recursive: true });
    await mkdir(spec.logDir, { recursive: true });
    const a = new Agent(spec, Agent.spawn(spec), (await readFile(spec.tokenFile, "utf8")).trim());
    await a.ready();
    return a;
  }

  private static spawn(spec: AgentSpec): ChildProcess {
    const args = [
      CLI, "node",
      "--name", spec.name,
      "--zone", spec.zone ?? "zone-a",
      "--store", spec.store,
      "--listen", `${spec.address}:7071`,
      "--api", `${spec.address}:7072`,
      "--metrics", `${spec.address}:7073`,
      "--directory", spec.directory,
      "--token-file", spec.tokenFile,
      "--trust", spec.trust,
      "--lease-ttl", "3",
      "--holder-ttl", "4",
      "--heartbeat", "1",
      ...(spec.signingKey ? ["--signing-key", spec.signingKey] : []),
      ...(spec.jdks ?? []).flatMap((j) => ["--jdk", j]),
      ...(spec.args ?? []),
    ];
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
    const log = createWriteStream(join(spec.logDir, `${spec.name}.log`), { flags: "a" });
    child.stdout.pipe(log);
    child.stderr.pipe(log);
    return child;
  }

  get peer(): string {
    return `http://${this.spec.address}:7071`;
  }

  /** /metrics, /healthz and /readyz: the port a cluster opens to Prometheus. */
  get metricsUrl(): string {
    return `http://${this.spec.address}:7073`;
  }

  async ready(ms = 30_000): Promise<void> {
    const until = Date.now() + ms;
    while (Date.now() < until) {
      if (this.child.exitCode !== null) throw new Error(`${this.spec.name} exited with ${this.child.exitCode}:\n${await this.logs()}`);
      try {
        if ((await fetch(`${this.metricsUrl}/healthz`)).ok) return;
      } catch {
        /* not yet */
      }
      await sleep(100);
    }
    throw new Error(`${this.spec.name} did not start:\n${await this.logs()}`);
  }

  async logs(): Promise<string> {
    return readFile(join(this.spec.logDir, `${this.spec.name}.log`), "utf8").catch(() => "");
  }

  /** POST /v1/ensure on the agent's local API. */
  async ensure(body: unknown, token = this.token): Promise<{ status: number; body: Record<string, unknown> }> {
    const res = await fetch(`http://${this.spec.address}:7072/v1/ensure`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return { status: res.status, body: (await res.json().catch(() => ({}))) as Record<string, unknown> };
  }

  /** The value of a Prometheus counter or gauge (summed over labels) from /metrics. */
  async metric(name: string): Promise<number> {
    const text = await (await fetch(`${this.metricsUrl}/metrics`)).text();
    return text
      .split("\n")
      .filter((l) => l.startsWith(name) && /^[\w]+(\{[^}]*\})? /.test(l) && l.split(/[{ ]/)[0] === name)
      .reduce((a, l) => a + Number(l.split(" ").pop()), 0);
  }

  kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve();
    const exited = new Promise<void>((r) => this.child.once("exit", () => r()));
    this.child.kill(signal);
    return exited;
  }

  async stop(): Promise<void> {
    await this.kill("SIGTERM");
  }

  async restart(): Promise<void> {
    await this.stop();
    this.child = Agent.spawn(this.spec);
    await this.ready();
  }
}
