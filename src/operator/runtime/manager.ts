/**
 * The Manager runs an operator's runnables. Some run on every replica, always: informers (so a
 * new leader starts with warm caches), the health server, later the webhook server. Others run
 * only on the leader: controllers. Leader election is optional (without it, everything runs).
 *
 * Order matters at both ends:
 *  - start: always-on runnables and the campaign start together; leader-only runnables start when
 *    this replica becomes leader;
 *  - graceful stop (signal): leader-only runnables stop first and are awaited, then the Lease is
 *    released (the next leader starts at once, without overlapping), then the rest stops. If
 *    leader-only runnables do not stop in time, the Lease is not released: it expires instead;
 *  - lost leadership: leader-only runnables are aborted and not waited for — another replica may
 *    already lead — and start() rejects with LeadershipLostError. Exit the process then, as
 *    controller-runtime does: in-flight work of the old leader must not continue.
 */
import type { Logger } from "../../runtime/log.ts";
import { aborted, RunGroup, settlesWithin, type RunGroupOptions, type Runnable } from "../../runtime/runnable.ts";
import { LeadershipLostError, type LeaderElector } from "./leader.ts";

export interface ManagerOptions {
  logger: Logger;
  /** When set, leader-only runnables run only while this elector leads. */
  leaderElection?: LeaderElector;
  /** How long each stage of a graceful stop may take (default 30 s). */
  shutdownTimeoutMs?: number;
  /** Schedules shutdown deadlines (a fake in tests). */
  setTimer?: RunGroupOptions["setTimer"];
}

export interface AddOptions {
  /** Run only on the leader (default true, as in controller-runtime: controllers). */
  needLeaderElection?: boolean;
}

export class Manager implements Runnable {
  readonly name = "manager";
  readonly #opts: ManagerOptions;
  readonly #always: Runnable[] = [];
  readonly #leaderOnly: Runnable[] = [];
  #started = false;

  constructor(opts: ManagerOptions) {
    this.#opts = opts;
  }

  add(runnable: Runnable, opts: AddOptions = {}): this {
    if (this.#started) throw new Error("cannot add runnables to a started manager");
    (opts.needLeaderElection ?? true ? this.#leaderOnly : this.#always).push(runnable);
    return this;
  }

  async start(signal: AbortSignal): Promise<void> {
    if (this.#started) throw new Error("the manager was already started");
    this.#started = true;
    const log = this.#opts.logger.with({ runnable: this.name });
    const timeoutMs = this.#opts.shutdownTimeoutMs ?? 30_000;
    const groupOpts: RunGroupOptions = {
      shutdownTimeoutMs: timeoutMs,
      logger: this.#opts.logger,
      ...(this.#opts.setTimer ? { setTimer: this.#opts.setTimer } : {}),
    };

    const stop = new AbortController();
    const forward = (): void => stop.abort(signal.reason);
    if (signal.aborted) forward();
    else signal.addEventListener("abort", forward, { once: true });
    let failure: Error | undefined;
    let lostLeadership = false;
    const fail = (err: unknown): void => {
      failure ??= err instanceof Error ? err : new Error(String(err));
      stop.abort(failure);
    };

    const alwaysCtl = new AbortController();
    const alwaysDone = new RunGroup("always", this.#always, groupOpts).start(alwaysCtl.signal).catch(fail);

    const leaderCtl = new AbortController();
    let leaderDone: Promise<void> = Promise.resolve();
    const startLeaderOnly = (): void => {
      log.info("starting leader-only runnables", { runnables: this.#leaderOnly.map((r) => r.name) });
      leaderDone = new RunGroup("leader-only", this.#leaderOnly, groupOpts).start(leaderCtl.signal).catch(fail);
    };

    const elector = this.#opts.leaderElection;
    const electorCtl = new AbortController();
    let electorDone: Promise<void> = Promise.resolve();
    if (!elector) {
      startLeaderOnly();
    } else {
      electorDone = elector.start(electorCtl.signal).catch((err: unknown) => {
        if (err instanceof LeadershipLostError) lostLeadership = true;
        fail(err);
      });
      void elector.whenLeading().then((leadership) => {
        if (!leadership || stop.signal.aborted) return;
        leadership.addEventListener("abort", () => leaderCtl.abort(leadership.reason), { once: true });
        startLeaderOnly();
      });
    }

    try {
      await aborted(stop.signal);
      log.info("stopping", { reason: describe(stop.signal.reason) });
      leaderCtl.abort(stop.signal.reason);
      if (!lostLeadership && !(await settlesWithin(leaderDone, timeoutMs, this.#opts.setTimer))) {
        log.error("leader-only runnables did not stop in time; keeping the lease until it expires", { timeoutMs });
        if (elector) elector.releaseOnCancel = false;
      }
      electorCtl.abort(stop.signal.reason);
      await electorDone;
      alwaysCtl.abort(stop.signal.reason);
      await alwaysDone;
    } finally {
      signal.removeEventListener("abort", forward);
    }
    if (failure !== undefined) throw failure;
    log.info("stopped");
  }
}

function describe(reason: unknown): string {
  return reason instanceof Error ? reason.message : String(reason);
}
