import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RunGroup, RunnableError, ShutdownTimeoutError, settlesWithin, type Runnable } from "./runnable.ts";

/** A runnable that records what happened to it and stops when told (after `stopDelayMs`). */
function worker(name: string, log: string[], opts: { stopDelayMs?: number; ignoreAbort?: boolean } = {}): Runnable {
  return {
    name,
    start(signal) {
      log.push(`${name} started`);
      return new Promise((resolve) => {
        if (opts.ignoreAbort) return; // never stops
        const stop = (): void => {
          setTimeout(() => {
            log.push(`${name} stopped`);
            resolve();
          }, opts.stopDelayMs ?? 0);
        };
        if (signal.aborted) stop();
        else signal.addEventListener("abort", stop, { once: true });
      });
    },
  };
}

function failing(name: string, afterMs: number, log: string[]): Runnable {
  return {
    name,
    async start() {
      log.push(`${name} started`);
      await new Promise((r) => setTimeout(r, afterMs));
      throw new Error("boom");
    },
  };
}

/** A timer that the test fires by hand. */
function manualTimer(): { setTimer: (fn: () => void, ms: number) => () => void; fire(): void; scheduled: number[] } {
  const pending = new Set<() => void>();
  const scheduled: number[] = [];
  return {
    scheduled,
    setTimer(fn, ms) {
      scheduled.push(ms);
      pending.add(fn);
      return () => pending.delete(fn);
    },
    fire() {
      for (const fn of [...pending]) fn();
      pending.clear();
    },
  };
}

void describe("RunGroup", () => {
  void it("starts every runnable and, when the signal aborts, resolves once all have stopped", async () => {
    const log: string[] = [];
    const ctl = new AbortController();
    const group = new RunGroup("g", [worker("a", log), worker("b", log, { stopDelayMs: 20 })]);
    const done = group.start(ctl.signal);
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(log, ["a started", "b started"]);
    ctl.abort();
    await done;
    assert.deepEqual(log.slice(2).sort(), ["a stopped", "b stopped"]);
  });

  void it("aborts the others when one fails and rejects with that failure after they stopped", async () => {
    const log: string[] = [];
    const group = new RunGroup("g", [worker("a", log, { stopDelayMs: 10 }), failing("bad", 5, log)]);
    const err = await group.start(new AbortController().signal).then(
      () => assert.fail("should have failed"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof RunnableError);
    assert.equal(err.runnable, "bad");
    assert.equal((err.cause as Error).message, "boom");
    assert.ok(log.includes("a stopped"), "the healthy runnable was stopped and awaited");
  });

  void it("gives up waiting at the shutdown deadline and names the runnables still running", async () => {
    const log: string[] = [];
    const timer = manualTimer();
    const ctl = new AbortController();
    const group = new RunGroup("g", [worker("quick", log), worker("stuck", log, { ignoreAbort: true })], {
      shutdownTimeoutMs: 1234,
      setTimer: timer.setTimer,
    });
    const done = group.start(ctl.signal);
    ctl.abort();
    await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(timer.scheduled, [1234]);
    timer.fire();
    const err = await done.then(
      () => assert.fail("should have failed"),
      (e: unknown) => e,
    );
    assert.ok(err instanceof ShutdownTimeoutError);
    assert.deepEqual(err.pending, ["stuck"]);
  });

  void it("reports the original failure, not the timeout, when a failure led to a stuck shutdown", async () => {
    const log: string[] = [];
    const timer = manualTimer();
    const group = new RunGroup("g", [failing("bad", 1, log), worker("stuck", log, { ignoreAbort: true })], {
      setTimer: timer.setTimer,
    });
    const done = group.start(new AbortController().signal);
    await new Promise((r) => setTimeout(r, 20));
    timer.fire();
    await assert.rejects(done, (e: unknown) => e instanceof RunnableError && e.runnable === "bad");
  });

  void it("treats an abort error thrown during shutdown as a normal stop", async () => {
    const ctl = new AbortController();
    const rethrows: Runnable = {
      name: "rethrows",
      start: (signal) =>
        new Promise((_, reject) => signal.addEventListener("abort", () => reject(signal.reason as Error), { once: true })),
    };
    const done = new RunGroup("g", [rethrows]).start(ctl.signal);
    ctl.abort();
    await done;
  });

  void it("keeps running the others when one returns early on its own", async () => {
    const log: string[] = [];
    const ctl = new AbortController();
    const oneShot: Runnable = { name: "once", start: () => Promise.resolve() };
    const done = new RunGroup("g", [oneShot, worker("a", log)]).start(ctl.signal);
    await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(log, ["a started"], "a is still running");
    ctl.abort();
    await done;
    assert.deepEqual(log, ["a started", "a stopped"]);
  });

  void it("stops everything at once when started with an aborted signal", async () => {
    const log: string[] = [];
    const ctl = new AbortController();
    ctl.abort();
    await new RunGroup("g", [worker("a", log)]).start(ctl.signal);
    assert.deepEqual(log, ["a started", "a stopped"]);
  });
});

void describe("settlesWithin", () => {
  void it("says whether a promise settled before the deadline", async () => {
    assert.equal(await settlesWithin(Promise.resolve(), 1000), true);
    assert.equal(await settlesWithin(Promise.reject(new Error("x")), 1000), true);
    assert.equal(await settlesWithin(new Promise(() => {}), 5), false);
  });
});
