/**
 * A candidate for leader election in its own process, for leader.process.test.ts:
 *
 *   node lease-candidate.ts <kubeconfig> <namespace> <lease> <identity> <leaseMs> <renewMs> <retryMs>
 *
 * Runs a Manager whose only leader-only runnable reports when it starts and stops. Prints one
 * JSON object per line on stdout: {"event": "observed" | "leading" | "stopped-leading" | "exit", ...}.
 * SIGTERM stops it gracefully (releasing the Lease); exit code 0 then, 1 when leadership was lost.
 */
import { KubeClient } from "../../../kube/client.ts";
import { createLogger } from "../../../runtime/log.ts";
import type { Runnable } from "../../../runtime/runnable.ts";
import { LeaderElector } from "../leader.ts";
import { Manager } from "../manager.ts";

const [kubeconfigPath, namespace, lease, identity, leaseMs, renewMs, retryMs] = process.argv.slice(2);
if (!kubeconfigPath || !namespace || !lease || !identity || !leaseMs || !renewMs || !retryMs) {
  process.stderr.write("usage: lease-candidate.ts <kubeconfig> <namespace> <lease> <identity> <leaseMs> <renewMs> <retryMs>\n");
  process.exit(2);
}

const say = (event: string, fields: Record<string, unknown> = {}): void => {
  process.stdout.write(`${JSON.stringify({ event, identity, at: Date.now(), ...fields })}\n`);
};
const logger = createLogger({ level: "info", format: "json" }, { identity });
const elector = new LeaderElector({
  client: KubeClient.load({ kubeconfigPath, requestTimeoutMs: 2_000 }),
  namespace,
  name: lease,
  identity,
  leaseDurationMs: Number(leaseMs),
  renewDeadlineMs: Number(renewMs),
  retryPeriodMs: Number(retryMs),
  logger,
  onNewLeader: (holder) => say("observed", { holder }),
});
const work: Runnable = {
  name: "leader-only-work",
  start: (signal) =>
    new Promise((resolve) => {
      say("leading");
      signal.addEventListener(
        "abort",
        () => {
          say("stopped-leading");
          resolve();
        },
        { once: true },
      );
    }),
};

const manager = new Manager({ logger, leaderElection: elector, shutdownTimeoutMs: 5_000 }).add(work);
const ctl = new AbortController();
process.once("SIGTERM", () => ctl.abort(new Error("SIGTERM")));
manager.start(ctl.signal).then(
  () => {
    say("exit", { code: 0 });
    process.exit(0);
  },
  (err: unknown) => {
    say("exit", { code: 1, error: (err as Error).message });
    process.exit(1);
  },
);
