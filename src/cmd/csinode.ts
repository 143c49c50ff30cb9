/** `classcache csi-node`: the CSI node plugin that serves the store's views as inline volumes. Wires flags to the plugin. */
import { CsiNodePlugin, CSI_DRIVER } from "../node/csi/plugin.ts";
import { KUBELET_DIR, STORE_ROOT } from "../operator/constants.ts";
import { ClasscacheError, usageError } from "../runtime/errors.ts";
import { createLogger } from "../runtime/log.ts";
import { RunGroup, RunnableError } from "../runtime/runnable.ts";
import { parse, type Command } from "./command.ts";

const summary = "run the CSI node plugin: a pod mounts its scope's view of the store as an inline volume";

const usage = `
usage: classcache csi-node [--store <dir>] [--kubelet-dir <dir>] [--node <name>]

The CSI node plugin (driver ${CSI_DRIVER}), for namespaces whose Pod Security level forbids
hostPath volumes: a pod mounts its namespace's view of the node's store, read-only, as an inline
ephemeral CSI volume. Runs privileged beside the node agent, with the kubelet's directory
mounted at the same path as on the host, with Bidirectional mount propagation (docs/csi.md).

  --store <dir>            the store, as this container sees it (default ${STORE_ROOT})
  --kubelet-dir <dir>      the kubelet's --root-dir (default ${KUBELET_DIR})
  --node <name>            this node's name (default $NODE_NAME; one of them is required)
  --log-format text|json
`;

export const csiNodeCommand: Command = {
  name: "csi-node",
  summary,
  usage,
  async run(argv, io) {
    const { values } = parse("csi-node", argv, {
      store: { type: "string", default: STORE_ROOT },
      "kubelet-dir": { type: "string", default: KUBELET_DIR },
      node: { type: "string" },
      "log-format": { type: "string", default: "text" },
    });
    const nodeName = values.node ?? io.env.NODE_NAME;
    if (!nodeName) throw usageError("the node's name is required: --node <name>, or NODE_NAME in the environment", "in a DaemonSet, set NODE_NAME from the downward API (fieldRef: spec.nodeName)");
    const log = createLogger({ format: values["log-format"] === "json" ? "json" : "text" }, { node: nodeName, component: "csi-node" });
    const plugin = new CsiNodePlugin({ nodeName, store: values.store, kubeletDir: values["kubelet-dir"], log });
    await new RunGroup("csi-node", [plugin], { logger: log, shutdownTimeoutMs: 15_000 }).start(io.signal).catch((err: unknown) => {
      // The plugin's own error says what to do; the group's wrapper would hide its hint.
      throw err instanceof RunnableError && err.cause instanceof ClasscacheError ? err.cause : err;
    });
    return 0;
  },
};
