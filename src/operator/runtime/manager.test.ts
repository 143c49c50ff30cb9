/**
 * The Manager's lifecycle with an in-memory Lease store and a fake clock. The same flow runs
 * against a real API server, in separate processes, in leader.process.test.ts.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ApiError } from "../../kube/errors.ts";
import type { Lease } from "../../kube/types.ts";
import { discardLogger } from "../../runtime/log.ts";
import { RunnableError, type Runnable } from "../../runtime/runnable.ts";
import { FakeClock, settle } from "./clock.ts";
import { LeaderElector, LeadershipLostError, type LeaseClient } from "./leader.ts";
import { Manager } from "./manager.ts";

class MemoryLeases implements LeaseClient {
  lease: Lease | undefined;
  #rv = 0;
  unreachable = false;
  getLease(): Promise<Lease | undefined> {
    if (this.unreachable) return Promise.reject(new Error("connection refused"));
    return Promise.resolve(this.lease && structuredClone(this.lease));
  }
  createLease(lease: Lease): Promise<Lease> {
    if (this.lease) return Promise.reject(new ApiError(409, "exists", { reason: "AlreadyExists" }));
    return Promise.resolve(this.#store(lease));
  }
  updateLease(lease: Lease): Promise<Lease> {
    if (this.unreachable) return Promise.reject(new Error("connection refused"));
    if (lease.metadata.resourceVersion !== this.lease?.metadata.resourceVersion) {
      return Promise.reject(new ApiError(409, "conflict", { reason: "Conflict" }));
    }
    return Promise.resolve(this.#store(lease));
  }
  #store(lease: Lease): Lease {
    this.lease = structuredClone({ ...lease, metadata: { ...lease.metadata, resourceVersion: String(++this.#rv) } });
    return structuredClone(this.lease);
  }
}

/** Records start/stop; on stop it also records who held the Lease at that moment. */
function probe(name: string, log: string[], opts: { leases?: MemoryLeases; stuck?: boolean; failAfterStart?: boolean } = {}): Runnable {
  return {
    name,
    async start(signal) {
      log.push(`${name} started`);
      if (opts.failAfterStart) {
        await settle();
        throw new Error(`${name} broke`);
      }
      await new Promise<void>((resolve) => {
        if (opts.stuck) return;
        const stop = (): void => {
          log.push(`${name} stopped` + (opts.leases ? ` (holder ${opts.leases.lease?.spec?.holderIdentity})` : ""));
          resolve();
        };
        if (signal.aborted) stop();
        else signal.addEventListener("abort", stop, { once: true });
      });
    },
  };
}

function elector(leases: MemoryLeases, clock: FakeClock, identity = "me"): LeaderElector {
  return new LeaderElector({
    client: leases,
    namespace: "ns",
    name: "lock",
    identity,
    leaseDurationMs: 15_000,
    renewDeadlineMs: 10_000,
    retryPeriodMs: 2_000,
    logger: discardLogger,
    clock,
    random: () => 0,
  });
}

/** Deadline timers driven by the fake clock too. */
function clockTimer(clock: FakeClock): (fn: () => void, ms: number) => () => void {
  return (fn, ms) => {
    const t = clock.setTimeout(fn, ms);
    return () => t.cancel();
  };
}

void describe("Manager", () => {
  void it("runs everything at once without leader election and stops it all on abort", async () => {
    const log: string[] = [];
    const mgr = new Manager({ logger: discardLogger })
      .add(probe("informer", log), { needLeaderElection: false })
      .add(probe("controller", log));
    const ctl = new AbortController();
    const done = mgr.start(ctl.signal);
    await settle();
    assert.deepEqual(log.sort(), ["controller started", "informer started"]);
    ctl.abort();
    await done;
    assert.equal(log.filter((l) => l.endsWith("stopped")).length, 2);
  });

  void it("starts leader-only runnables only once elected", async () => {
    const clock = new FakeClock();
    const leases = new MemoryLeases();
    const other = elector(leases, clock, "other");
    const otherCtl = new AbortController();
    const otherDone = other.start(otherCtl.signal);
    await settle();
    assert.equal(other.isLeader(), true);

    const log: string[] = [];
    const mgr = new Manager({ logger: discardLogger, leaderElection: elector(leases, clock), setTimer: clockTimer(clock) })
      .add(probe("informer", log), { needLeaderElection: false })
      .add(probe("controller", log));
    const ctl = new AbortController();
    const done = mgr.start(ctl.signal);
    await clock.advance(30_000);
    assert.deepEqual(log, ["informer started"], "the cache warms up while another replica leads");

    otherCtl.abort(); // releases
    await otherDone;
    await clock.advance(2_500);
    assert.deepEqual(log, ["informer started", "controller started"]);
    ctl.abort();
    await done;
  });

  void it("on a graceful stop, stops leader-only work before releasing the lease, and the rest after", async () => {
    const clock = new FakeClock();
    const leases = new MemoryLeases();
    const log: string[] = [];
    const mgr = new Manager({ logger: discardLogger, leaderElection: elector(leases, clock), setTimer: clockTimer(clock) })
      .add(probe("informer", log, { leases }), { needLeaderElection: false })
      .add(probe("controller", log, { leases }));
    const ctl = new AbortController();
    const done = mgr.start(ctl.signal);
    await settle();
    ctl.abort();
    await done;
    assert.deepEqual(log, ["informer started", "controller started", "controller stopped (holder me)", "informer stopped (holder )"]);
    assert.equal(leases.lease?.spec?.holderIdentity, "");
  });

  void it("rejects with LeadershipLostError and stops leader-only work when the lease cannot be renewed", async () => {
    const clock = new FakeClock();
    const leases = new MemoryLeases();
    const log: string[] = [];
    const mgr = new Manager({ logger: discardLogger, leaderElection: elector(leases, clock), setTimer: clockTimer(clock) })
      .add(probe("informer", log), { needLeaderElection: false })
      .add(probe("controller", log));
    const done = mgr.start(new AbortController().signal);
    done.catch(() => {});
    await settle();
    assert.deepEqual(log, ["informer started", "controller started"]);
    leases.unreachable = true;
    await clock.advance(14_000);
    await assert.rejects(done, LeadershipLostError);
    assert.ok(log.includes("controller stopped"));
    assert.ok(log.includes("informer stopped"));
  });

  void it("stops everything and rejects when a runnable fails, releasing the lease", async () => {
    const clock = new FakeClock();
    const leases = new MemoryLeases();
    const log: string[] = [];
    const mgr = new Manager({ logger: discardLogger, leaderElection: elector(leases, clock), setTimer: clockTimer(clock) })
      .add(probe("informer", log), { needLeaderElection: false })
      .add(probe("controller", log, { failAfterStart: true }));
    const err = await mgr.start(new AbortController().signal).then(
      () => assert.fail("should fail"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof RunnableError);
    assert.equal(err.runnable, "controller");
    assert.ok(log.includes("informer stopped"));
    assert.equal(leases.lease?.spec?.holderIdentity, "");
  });

  void it("keeps the lease (to let it expire) when leader-only work does not stop in time", async () => {
    const clock = new FakeClock();
    const leases = new MemoryLeases();
    const log: string[] = [];
    const mgr = new Manager({
      logger: discardLogger,
      leaderElection: elector(leases, clock),
      shutdownTimeoutMs: 5_000,
      setTimer: clockTimer(clock),
    })
      .add(probe("informer", log), { needLeaderElection: false })
      .add(probe("controller", log, { stuck: true }));
    const ctl = new AbortController();
    const done = mgr.start(ctl.signal);
    done.catch(() => {});
    await settle();
    ctl.abort();
    await clock.advance(5_000);
    await done.catch(() => {});
    assert.equal(leases.lease?.spec?.holderIdentity, "me", "not released while the old leader may still act");
  });
});
