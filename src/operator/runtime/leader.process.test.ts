/**
 * Leader election for real: candidates are separate OS processes (testdata/lease-candidate.ts)
 * competing for one Lease on a real kube-apiserver.
 */
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import { createNamespace, startKubeTestEnv, type KubeTestEnv } from "../../kube/testing/env.ts";

const CANDIDATE = fileURLToPath(new URL("./testdata/lease-candidate.ts", import.meta.url));
const LEASE_MS = 3_000;
const RENEW_MS = 2_000;
const RETRY_MS = 500;
const LEASE = "operator";

interface Said {
  event: string;
  identity: string;
  at: number;
  holder?: string;
  code?: number;
}

class Candidate {
  readonly identity: string;
  readonly child: ChildProcess;
  readonly said: Said[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<number | null>;
  #waiters: (() => void)[] = [];

  constructor(identity: string, kubeconfig: string, namespace: string) {
    this.identity = identity;
    const args = [CANDIDATE, kubeconfig, namespace, LEASE, identity, String(LEASE_MS), String(RENEW_MS), String(RETRY_MS)];
    this.child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
    createInterface({ input: this.child.stdout! }).on("line", (line) => {
      this.said.push(JSON.parse(line) as Said);
      for (const w of this.#waiters.splice(0)) w();
    });
    createInterface({ input: this.child.stderr! }).on("line", (line) => this.stderr.push(line));
    this.exited = new Promise((resolve) => this.child.on("exit", (code) => resolve(code)));
  }

  has(event: string, pred: (s: Said) => boolean = () => true): Said | undefined {
    return this.said.find((s) => s.event === event && pred(s));
  }

  /** Waits until the candidate says `event` (matching `pred`); fails after `timeoutMs`. */
  async waitFor(event: string, timeoutMs: number, pred: (s: Said) => boolean = () => true): Promise<Said> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.has(event, pred);
      if (found) return found;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.identity} did not say ${event} within ${timeoutMs} ms; stderr:\n${this.stderr.slice(-20).join("\n")}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  kill(signal: NodeJS.Signals): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }
}

/** Whichever of `cs` says "leading" first (after `since`). */
async function firstLeader(cs: Candidate[], timeoutMs: number, since = 0): Promise<[Candidate, Said]> {
  return Promise.any(cs.map(async (c) => [c, await c.waitFor("leading", timeoutMs, (s) => s.at >= since)] as [Candidate, Said]));
}

void describe("leader election between separate processes", { timeout: 120_000 }, () => {
  let k: KubeTestEnv;
  let ns: string;
  const all: Candidate[] = [];
  const candidate = (identity: string): Candidate => {
    const c = new Candidate(identity, k.env.kubeconfigPath, ns);
    all.push(c);
    return c;
  };
  before(async () => {
    k = await startKubeTestEnv("leader");
    ns = await createNamespace(k.client, "election");
  });
  after(async () => {
    for (const c of all) c.kill("SIGKILL");
    await Promise.all(all.map((c) => c.exited));
    await k?.stop();
  });

  void it("elects exactly one, hands over after a kill -9 within the lease duration, and at once after SIGTERM", async () => {
    // Two candidates start together: exactly one leads.
    const a = candidate("a");
    const b = candidate("b");
    const [leader, leading] = await firstLeader([a, b], 15_000);
    const follower = leader === a ? b : a;
    await follower.waitFor("observed", 5_000, (s) => s.holder === leader.identity);
    await new Promise((r) => setTimeout(r, 4 * RETRY_MS));
    assert.equal(follower.has("leading"), undefined, "the follower does not lead while the leader renews");
    const lease = await k.client.getLease(ns, LEASE);
    assert.equal(lease?.spec?.holderIdentity, leader.identity);
    assert.equal(lease?.spec?.leaseDurationSeconds, LEASE_MS / 1000);
    assert.ok(leading.at > 0);

    // kill -9: no release; the follower waits for the Lease to expire.
    const killedAt = Date.now();
    leader.kill("SIGKILL");
    const [, takeover] = await firstLeader([follower], LEASE_MS + 4 * RETRY_MS + 2_000);
    const takeoverMs = takeover.at - killedAt;
    // The follower dates the Lease from when it saw the last renewal — up to one (jittered) retry
    // period after it was written — and tries again the moment that expires: at most
    // leaseDuration + 1.2 × retryPeriod, plus process and request overhead.
    assert.ok(takeoverMs >= LEASE_MS - RETRY_MS, `took over ${takeoverMs} ms after the kill: too early`);
    assert.ok(takeoverMs <= LEASE_MS + 1.2 * RETRY_MS + 300, `took over ${takeoverMs} ms after the kill`);
    process.stderr.write(`# kill -9 hand-over: ${takeoverMs} ms (lease ${LEASE_MS} ms, retry ${RETRY_MS} ms)\n`);

    // A new follower; then SIGTERM the leader: it stops its work, releases, exits 0.
    const c = candidate("c");
    await c.waitFor("observed", 10_000, (s) => s.holder === follower.identity);
    const termAt = Date.now();
    follower.kill("SIGTERM");
    const [, handover] = await firstLeader([c], 5_000);
    const handoverMs = handover.at - termAt;
    assert.equal(await follower.exited, 0);
    const stopped = follower.has("stopped-leading");
    assert.ok(stopped && stopped.at <= handover.at, "the old leader stopped its work before the new one started");
    assert.ok(handoverMs <= 1.2 * RETRY_MS + 500, `handed over ${handoverMs} ms after SIGTERM`);
    process.stderr.write(`# SIGTERM hand-over: ${handoverMs} ms\n`);

    const final = await k.client.getLease(ns, LEASE);
    assert.equal(final?.spec?.holderIdentity, "c");
    assert.equal(final?.spec?.leaseTransitions, 2, "a → b → c");
    c.kill("SIGTERM");
    assert.equal(await c.exited, 0);
  });
});
