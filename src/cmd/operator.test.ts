import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseOperatorArgs } from "./operator.ts";

void describe("classcache operator flags", () => {
  void it("defaults: both roles, leader election, no cluster sharing, agents on worker nodes without host PID, priority or pull policy", () => {
    const f = parseOperatorArgs([]);
    assert.equal(f.role, "all");
    assert.equal(f.metricsPort, 8080);
    assert.equal(f.leaderElection, true);
    assert.equal(f.allowClusterSharing, false);
    assert.deepEqual(f.agents, { observeJvms: false, controlPlane: false });
    assert.equal(f.logFormat, "text");
  });

  void it("passes the node agents' settings through: what the chart's agent.* values become", () => {
    const f = parseOperatorArgs([
      "--role", "controller", "--observe-jvms", "--agent-priority-class", "system-node-critical",
      "--agents-on-control-plane", "--agent-image-pull-policy", "Never", "--metrics-port", "9090", "--log-format", "json",
    ]);
    assert.deepEqual(f.agents, { observeJvms: true, controlPlane: true, priorityClassName: "system-node-critical", imagePullPolicy: "Never" });
    assert.equal(f.metricsPort, 9090);
    assert.equal(f.logFormat, "json");
  });

  void it("refuses a pull policy or priority class Kubernetes would refuse, before the DaemonSet is ever applied", () => {
    assert.throws(() => parseOperatorArgs(["--agent-image-pull-policy", "always"]), /--agent-image-pull-policy always is not a pull policy/);
    assert.throws(() => parseOperatorArgs(["--agent-priority-class", "System Critical"]), /is not a PriorityClass name/);
    assert.throws(() => parseOperatorArgs(["--role", "webhook"]), /--role webhook needs --webhook-cert-dir/);
  });
});
