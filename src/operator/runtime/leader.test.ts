/**
 * The election algorithm against an in-memory Lease store with the API server's concurrency rules
 * (create fails if it exists; update fails unless the resourceVersion matches) and a fake clock.
 * leader.process.test.ts runs it for real: separate processes and a real API server.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ApiError } from "../../kube/errors.ts";
import type { Lease } from "../../kube/types.ts";
import { discardLogger } from "../../runtime/log.ts";
import { FakeClock, settle, type Clock } from "./clock.ts";
import { LeaderElector, LeadershipLostError, type LeaderElectorOptions, type LeaseClient } from "./leader.ts";

class FakeLeases implements LeaseClient {
  lease: Lease | undefined;
  #rv = 0;
  /** While true, every request waits until its signal aborts (an unreachable API server). */
  unreachable = false;
  writes = 0;

  async getLease(_ns: string, _name: string, opts: { signal?: AbortSignal } = {}): Promise<Lease | undefined> {
    await this.#maybeHang(opts.signal);
    return this.lease && structuredClone(this.lease);
  }

  async createLease(lease: Lease, opts: { signal?: AbortSignal } = {}): Promise<Lease> {
    await this.#maybeHang(opts.signal);
    if (this.lease) throw new ApiError(409, "leases already exists", { reason: "AlreadyExists" });
    return this.#store(lease);
  }

  async updateLease(lease: Lease, opts: { signal?: AbortSignal } = {}): Promise<Lease> {
    await this.#maybeHang(opts.signal);
    if (lease.metadata.resourceVersion !== this.lease?.metadata.resourceVersion) {
      throw new ApiError(409, "the object has been modified", { reason: "Conflict" });
    }
    return this.#store(lease);
  }

  #store(lease: Lease): Lease {
    this.writes++;
    this.lease = structuredClone({ ...lease, metadata: { ...lease.metadata, resourceVersion: String(++this.#rv) } });
    return structuredClone(this.lease);
  }

  #maybeHang(signal: AbortSignal | undefined): Promise<void> {
    if (!this.unreachable) return Promise.resolve();
    return new Promise((_, reject) => signal?.addEventListener("abort", () => reject(new Error("aborted")), { once: true }));
  }
}

const TIMING = { leaseDurationMs: 15_000, renewDeadlineMs: 10_000, retryPeriodMs: 2_000 };

function candidate(
  identity: string,
  leases: LeaseClient,
  clock: Clock,
  extra: Partial<LeaderElectorOptions> = {},
): { elector: LeaderElector; ctl: AbortController; done: Promise<void>; events: string[] } {
  const events: string[] = [];
  const elector = new LeaderElector({
    client: leases,
    namespace: "ns",
    name: "lock",
    identity,
    ...TIMING,
    logger: discardLogger,
    clock,
    random: () => 0,
    onStartedLeading: () => events.push("started"),
    onStoppedLeading: () => events.push("stopped"),
    ...extra,
  });
  const ctl = new AbortController();
  const done = elector.start(ctl.signal);
  done.catch(() => {}); // inspected by the tests that expect a failure
  return { elector, ctl, done, events };
}

void describe("LeaderElector", () => {
  void it("creates a missing Lease and leads at once", async () => {
    const clock = new FakeClock();
    const leases = new FakeLeases();
    const a = candidate("a", leases, clock);
    await settle();
    assert.equal(a.elector.isLeader(), true);
    assert.deepEqual(a.events, ["started"]);
    const spec = leases.lease?.spec;
    assert.equal(spec?.holderIdentity, "a");
    assert.equal(spec?.leaseDurationSeconds, 15);
    assert.equal(spec?.leaseTransitions, 0);
    assert.match(spec?.renewTime ?? "", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    assert.equal(spec?.acquireTime, spec?.renewTime);
    assert.ok((await a.elector.whenLeading()) instanceof AbortSignal);
    a.ctl.abort();
    await a.done;
  });

  void it("renews every retry period and keeps the acquire time", async () => {
    const clock = new FakeClock();
    const leases = new FakeLeases();
    const a = candidate("a", leases, clock);
    await settle();
    const acquired = leases.lease?.spec?.acquireTime;
    const writes = leases.writes;
    await clock.advance(3 * TIMING.retryPeriodMs);
    assert.equal(leases.writes, writes + 3);
    assert.equal(leases.lease?.spec?.acquireTime, acquired);
    assert.notEqual(leases.lease?.spec?.renewTime, acquired);
    a.ctl.abort();
    await a.done;
  });

  void it("does not take a Lease that is being renewed, and takes it a lease duration after renewals stop", async () => {
    const clock = new FakeClock();
    const leases = new FakeLeases();
    const a = candidate("a", leases, clock, { releaseOnCancel: false });
    await settle();
    const b = candidate("b", leases, clock);
    await clock.advance(60_000);
    assert.equal(b.elector.isLeader(), false, "a keeps renewing");
    assert.equal(b.elector.leader(), "a");

    a.ctl.abort(); // stops renewing without releasing, like a crash
    await a.done;
    const stoppedAt = clock.now();
    while (!b.elector.isLeader()) await clock.advance(100);
    const tookMs = clock.now() - stoppedAt;
    assert.ok(tookMs >= TIMING.leaseDurationMs - TIMING.retryPeriodMs, `took over after ${tookMs} ms`);
    assert.ok(tookMs <= TIMING.leaseDurationMs + 2 * TIMING.retryPeriodMs, `took over after ${tookMs} ms`);
    assert.equal(leases.lease?.spec?.holderIdentity, "b");
    assert.equal(leases.lease?.spec?.leaseTransitions, 1);
    b.ctl.abort();
    await b.done;
  });

  void it("judges validity by its own clock, not by the holder's renewTime", async () => {
    const clock = new FakeClock();
    const leases = new FakeLeases();
    // The holder's clock is an hour behind: every renewTime it writes looks long expired.
    const skewed: Clock = { now: () => clock.now() - 3_600_000, setTimeout: (fn, ms) => clock.setTimeout(fn, ms) };
    const a = candidate("a", leases, skewed);
    await settle();
    const b = candidate("b", leases, clock);
    await clock.advance(60_000);
    assert.equal(a.elector.isLeader(), true);
    assert.equal(b.elector.isLeader(), false);
    a.ctl.abort();
    b.ctl.abort();
    await Promise.all([a.done, b.done]);
  });

  void it("lets exactly one of two simultaneous candidates win", async () => {
    const clock = new FakeClock();
    const leases = new FakeLeases();
    const a = candidate("a", leases, clock);
    const b = candidate("b", leases, clock);
    await clock.advance(10_000);
    assert.equal([a, b].filter((c) => c.elector.isLeader()).length, 1);
    a.ctl.abort();
    b.ctl.abort();
    await Promise.all([a.done, b.done]);
  });

  void it("stops leading when it cannot renew within the renew deadline", async () => {
    const clock = new FakeClock();
    const leases = new FakeLeases();
    const a = candidate("a", leases, clock);
    const leadership = await a.elector.whenLeading();
    leases.unreachable = true;
    const cutAt = clock.now();
    await clock.advance(TIMING.renewDeadlineMs + TIMING.retryPeriodMs);
    await assert.rejects(a.done, LeadershipLostError);
    assert.equal(leadership?.aborted, true);
    assert.ok(leadership?.reason instanceof LeadershipLostError);
    assert.deepEqual(a.events, ["started", "stopped"]);
    assert.equal(a.elector.isLeader(), false);
    // It gave up before the Lease could expire for the others: no overlap.
    assert.ok(clock.now() - cutAt < TIMING.leaseDurationMs);
  });

  void it("stops leading when another holder took over the Lease", async () => {
    const clock = new FakeClock();
    const leases = new FakeLeases();
    const a = candidate("a", leases, clock);
    await a.elector.whenLeading();
    // Someone overwrites the Lease and keeps it fresh.
    const steal = (): void => {
      const l = structuredClone(leases.lease as Lease);
      l.spec = { ...l.spec, holderIdentity: "intruder", renewTime: `${clock.now()}` };
      leases.lease = { ...l, metadata: { ...l.metadata, resourceVersion: `x${clock.now()}` } };
    };
    for (let t = 0; t < TIMING.renewDeadlineMs + 2 * TIMING.retryPeriodMs; t += 1000) {
      steal();
      await clock.advance(1000);
    }
    await assert.rejects(a.done, LeadershipLostError);
  });

  void it("releases the Lease on a graceful stop so the next candidate takes over at its next retry", async () => {
    const clock = new FakeClock();
    const leases = new FakeLeases();
    const a = candidate("a", leases, clock);
    await settle();
    const b = candidate("b", leases, clock);
    await clock.advance(5_000);
    a.ctl.abort();
    await a.done;
    assert.deepEqual(a.events, ["started", "stopped"]);
    assert.equal(leases.lease?.spec?.holderIdentity, "");
    assert.equal(leases.lease?.spec?.leaseDurationSeconds, 1);
    const releasedAt = clock.now();
    while (!b.elector.isLeader()) await clock.advance(100);
    assert.ok(clock.now() - releasedAt <= TIMING.retryPeriodMs, `took over after ${clock.now() - releasedAt} ms`);
    assert.equal(leases.lease?.spec?.leaseTransitions, 1);
    b.ctl.abort();
    await b.done;
  });

  void it("resolves whenLeading with undefined when stopped before it ever led", async () => {
    const clock = new FakeClock();
    const leases = new FakeLeases();
    const a = candidate("a", leases, clock);
    await settle();
    const b = candidate("b", leases, clock);
    b.ctl.abort();
    await b.done;
    assert.equal(await b.elector.whenLeading(), undefined);
    assert.deepEqual(b.events, []);
    a.ctl.abort();
    await a.done;
  });

  void it("refuses timings that would let two leaders overlap", () => {
    const base = { client: new FakeLeases(), namespace: "ns", name: "l", identity: "a", logger: discardLogger };
    assert.throws(() => new LeaderElector({ ...base, leaseDurationMs: 10_000, renewDeadlineMs: 10_000 }), /leaseDurationMs/);
    assert.throws(() => new LeaderElector({ ...base, renewDeadlineMs: 2_000, retryPeriodMs: 2_000 }), /renewDeadlineMs/);
  });
});
