/** `classcache operator`: the ClassCache controller and the admission webhook, together or apart (--role). */
import { CLASSCACHE_VERSION } from "../build/pipeline.ts";
import { KubeClient } from "../kube/client.ts";
import type { AgentSettings } from "../operator/infra.ts";
import { KUBELET_DIR } from "../operator/constants.ts";
import { createOperator, OPERATOR_ROLES, type OperatorRole } from "../operator/operator.ts";
import { usageError } from "../runtime/errors.ts";
import { createLogger } from "../runtime/log.ts";
import { FileCerts } from "../webhook/certs.ts";
import { parse, type Command } from "./command.ts";

const usage = `
usage: classcache operator [options]

Reconciles ClassCache resources (the directory, the node agents, build Jobs, workload patches,
status) and serves the admission webhook. In a cluster it uses the pod's service account;
outside one, give --kubeconfig and --webhook-url (the API server must reach this process).

  --role all|controller|webhook
                             which part runs here (default all). controller: the reconciler, the
                             webhook's certificates and configurations; webhook: the admission
                             server alone, which reads ClassCaches and namespaces and serves the
                             certificates in --webhook-cert-dir (in a cluster: the controller's
                             Secret classcache-webhook-tls, mounted). Both parts need the same
                             --image and --allow-cluster-sharing: they are in the pod patch.
  --kubeconfig <file>        a kubeconfig (default: in-cluster service account)
  --context <name>           a kubeconfig context other than the current one
  --image <ref>              the classcache image for node agents, init steps and build kits
                             (default ghcr.io/classcache/classcache:${CLASSCACHE_VERSION})
  --webhook-port <n>         webhook HTTPS port (default 9443)
  --webhook-host <addr>      webhook listen address (default 0.0.0.0)
  --webhook-url <url>        how the API server reaches the webhook, e.g. https://127.0.0.1:9443
                             (default: the Service classcache-webhook in classcache-system)
  --metrics-port <n>         plain-HTTP port of /metrics, /healthz and /readyz (default 8080); the
                             controller opens it to Prometheus in classcache-system's NetworkPolicy
                             (next to the agents' 8080), so give the webhook the same
  --webhook-cert-dir <dir>   tls.crt/tls.key/ca.crt from files (cert-manager's, or the controller's
                             Secret mounted into the webhook) instead of self-managed certificates
  --directory-addr <h:p>     reach the managed directory here (outside the cluster its Service does not resolve)
  --allow-cluster-sharing    let ClassCaches with sharing: Cluster share archives across namespaces
  --observe-jvms             give the node agents the host's PID namespace and CAP_SYS_PTRACE, so
                             they read every JVM's class counters and memory on their node: the
                             live hit rate in status and the memory sharing in metrics (without
                             it, status shows the build's verified hit rate)
                             (archives are executable code: off by default)
  --agent-priority-class <name>
                             priorityClassName of the node agents, e.g. system-node-critical
                             (default none: GKE and others allow critical priorities only in kube-system)
  --agents-on-control-plane  run node agents on control-plane nodes too (default: worker nodes only)
  --agent-image-pull-policy Always|IfNotPresent|Never
                             the node agents' imagePullPolicy (default: Kubernetes')
  --agent-csi                run the CSI node plugin next to each node agent (privileged): pods in
                             namespaces enforcing Pod Security baseline or restricted, which forbid
                             hostPath, mount their view of the store through it (needs the
                             CSIDriver csi.classcache.dev, which the chart installs)
  --kubelet-dir <dir>        the kubelet's root directory on the nodes (default ${KUBELET_DIR})
  --no-leader-election       run the controller without a Lease (one replica only)
  --log-format text|json
`;

export const operatorCommand: Command = {
  name: "operator",
  summary: "run the ClassCache operator and admission webhook (together or apart)",
  usage,
  async run(argv, io) {
    const flags = parseOperatorArgs(argv);
    const log = createLogger({ format: flags.logFormat }, { component: flags.role === "webhook" ? "webhook" : "operator" });
    const client = KubeClient.load({ ...(flags.kubeconfig ? { kubeconfigPath: flags.kubeconfig } : {}), ...(flags.context ? { context: flags.context } : {}), userAgent: `classcache-operator/${CLASSCACHE_VERSION}` });
    const ip = flags.webhookUrl && /^\d+\.\d+\.\d+\.\d+$/.test(flags.webhookUrl.hostname) ? [flags.webhookUrl.hostname] : undefined;
    const op = createOperator({
      client,
      log,
      role: flags.role,
      image: flags.image,
      webhookPort: flags.webhookPort,
      metricsPort: flags.metricsPort,
      ...(flags.webhookHost ? { webhookHost: flags.webhookHost } : {}),
      ...(flags.webhookUrl ? { webhookTarget: { url: flags.webhookUrl.origin } } : {}),
      ...(ip ? { webhookIps: ip } : {}),
      ...(flags.webhookCertDir ? { certs: new FileCerts({ dir: flags.webhookCertDir, logger: log }) } : {}),
      ...(flags.directoryAddr ? { directoryUrl: flags.directoryAddr } : {}),
      leaderElection: flags.leaderElection,
      allowClusterSharing: flags.allowClusterSharing,
      agents: flags.agents,
    });
    await op.manager.start(io.signal);
    return 0;
  },
};

const PULL_POLICIES = ["Always", "IfNotPresent", "Never"] as const;

/** The operator's flags, checked: everything run() needs but the client and the logger. */
export interface OperatorFlags {
  role: OperatorRole;
  kubeconfig: string | undefined;
  context: string | undefined;
  image: string;
  webhookPort: number;
  webhookHost: string | undefined;
  metricsPort: number;
  webhookUrl: URL | undefined;
  webhookCertDir: string | undefined;
  directoryAddr: string | undefined;
  leaderElection: boolean;
  allowClusterSharing: boolean;
  agents: AgentSettings;
  logFormat: "text" | "json";
}

export function parseOperatorArgs(argv: string[]): OperatorFlags {
  const { values } = parse("operator", argv, {
    role: { type: "string", default: "all" },
    kubeconfig: { type: "string" },
    context: { type: "string" },
    image: { type: "string", default: `ghcr.io/classcache/classcache:${CLASSCACHE_VERSION}` },
    "webhook-port": { type: "string", default: "9443" },
    "webhook-host": { type: "string" },
    "metrics-port": { type: "string", default: "8080" },
    "webhook-url": { type: "string" },
    "webhook-cert-dir": { type: "string" },
    "directory-addr": { type: "string" },
    "no-leader-election": { type: "boolean", default: false },
    "allow-cluster-sharing": { type: "boolean", default: false },
    "observe-jvms": { type: "boolean", default: false },
    "agent-priority-class": { type: "string" },
    "agents-on-control-plane": { type: "boolean", default: false },
    "agent-image-pull-policy": { type: "string" },
    "agent-csi": { type: "boolean", default: false },
    "kubelet-dir": { type: "string", default: KUBELET_DIR },
    "log-format": { type: "string", default: "text" },
  });
  const role = values.role as OperatorRole;
  if (!OPERATOR_ROLES.includes(role)) throw usageError(`--role ${values.role} is not a role`, `use one of ${OPERATOR_ROLES.join(", ")}`);
  if (role === "webhook" && !values["webhook-cert-dir"]) {
    throw usageError("--role webhook needs --webhook-cert-dir", "the webhook serves the certificates the controller keeps in the Secret classcache-webhook-tls: mount its tls.crt, tls.key and ca.crt and name the directory");
  }
  const port = Number(values["webhook-port"]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw usageError(`--webhook-port ${values["webhook-port"]} is not a port number`);
  const metricsPort = Number(values["metrics-port"]);
  if (!Number.isInteger(metricsPort) || metricsPort < 0 || metricsPort > 65535) throw usageError(`--metrics-port ${values["metrics-port"]} is not a port number`);
  let webhookUrl: URL | undefined;
  if (values["webhook-url"]) {
    try {
      webhookUrl = new URL(values["webhook-url"]);
    } catch {
      throw usageError(`--webhook-url ${values["webhook-url"]} is not a URL`, "e.g. https://127.0.0.1:9443");
    }
    if (webhookUrl.protocol !== "https:") throw usageError("--webhook-url must be https: the API server only calls webhooks over TLS");
  }
  const pullPolicy = values["agent-image-pull-policy"];
  if (pullPolicy !== undefined && !(PULL_POLICIES as readonly string[]).includes(pullPolicy)) {
    throw usageError(`--agent-image-pull-policy ${pullPolicy} is not a pull policy`, `use one of ${PULL_POLICIES.join(", ")}`);
  }
  const kubeletDir = values["kubelet-dir"];
  if (!kubeletDir.startsWith("/") || kubeletDir.split("/").includes("..")) throw usageError(`--kubelet-dir ${kubeletDir} is not an absolute path`, "the kubelet's --root-dir, e.g. /var/lib/kubelet");
  const priorityClass = values["agent-priority-class"];
  if (priorityClass !== undefined && !/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/.test(priorityClass)) {
    throw usageError(`--agent-priority-class ${priorityClass} is not a PriorityClass name`, "a lower-case DNS subdomain, e.g. system-node-critical");
  }
  return {
    role,
    kubeconfig: values.kubeconfig,
    context: values.context,
    image: values.image,
    webhookPort: port,
    webhookHost: values["webhook-host"],
    metricsPort,
    webhookUrl,
    webhookCertDir: values["webhook-cert-dir"],
    directoryAddr: values["directory-addr"],
    leaderElection: !values["no-leader-election"],
    allowClusterSharing: values["allow-cluster-sharing"],
    agents: {
      observeJvms: values["observe-jvms"],
      controlPlane: values["agents-on-control-plane"],
      ...(priorityClass ? { priorityClassName: priorityClass } : {}),
      ...(pullPolicy ? { imagePullPolicy: pullPolicy as (typeof PULL_POLICIES)[number] } : {}),
      ...(values["agent-csi"] ? { csi: { kubeletDir: kubeletDir.replace(/\/+$/, "") } } : {}),
    },
    logFormat: values["log-format"] === "json" ? "json" : "text",
  };
}
