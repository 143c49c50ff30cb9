/**
 * NetworkPolicies of the system namespace: nothing gets in unless a rule below lets it. Only
 * ingress is restricted; the agents and the operator reach out to the directory, to each other and
 * to the API server, whose addresses a policy cannot name portably.
 */
import { COMPONENT_LABEL, COMPONENTS, FIELD_MANAGER, MANAGED_BY_LABEL, PART_OF, PORTS, SYSTEM_NAMESPACE } from "../constants.ts";
import { objectLabels, selectorLabels, type Built, type Component } from "./meta.ts";

function policy(name: string, component: Component | undefined, ingress: unknown[]): Built {
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: { name, namespace: SYSTEM_NAMESPACE, labels: component ? objectLabels(component) : { ...PART_OF, [MANAGED_BY_LABEL]: FIELD_MANAGER } },
    spec: {
      podSelector: component ? { matchLabels: selectorLabels(component) } : {},
      policyTypes: ["Ingress"],
      // No rules at all, not an empty list: the server drops an empty list, and re-applying it would
      // change the object's managed fields on every reconcile.
      ...(ingress.length ? { ingress } : {}),
    },
  };
}

const from = (...components: Component[]) => components.map((c) => ({ podSelector: { matchLabels: selectorLabels(c) } }));
const tcp = (port: number) => [{ protocol: "TCP", port }];

/** Every pod of the namespace: no ingress at all, unless another policy allows it (policies add up). */
export function defaultDenyIngress(): Built {
  return policy("classcache-default-deny-ingress", undefined, []);
}

/** The directory holds the build leases and who has what: only agents and the operator talk to it. */
export function directoryIngress(): Built {
  return policy("classcache-directory", COMPONENTS.directory, [{ from: from(COMPONENTS.agent, COMPONENTS.operator), ports: tcp(PORTS.directory) }]);
}

/**
 * Agents serve archives to other agents only. Workloads and build pods reach their node's agent
 * through the Unix socket in the store, which no NetworkPolicy governs.
 */
export function agentsIngress(): Built {
  return policy("classcache-agent", COMPONENTS.agent, [{ from: from(COMPONENTS.agent), ports: tcp(PORTS.peer) }]);
}

/**
 * The admission webhook must hear the API server, whose source address is a node's, a load
 * balancer's or a managed control plane's — not selectable by pod or namespace. So the webhook port
 * is open to every source; the webhook authenticates nothing but answers only AdmissionReviews over
 * TLS. It is open on the webhook's own pods only, which run apart from the controller, as a
 * service account that can read ClassCaches and namespaces and nothing else, and cannot reach the
 * directory (see directoryIngress).
 */
export function webhookIngress(): Built {
  return policy("classcache-webhook", COMPONENTS.webhook, [{ ports: tcp(PORTS.webhook) }]);
}

/**
 * Prometheus runs wherever the cluster's monitoring does, so the metrics port of the agents, the
 * operator and the webhook is open to every source. It serves /metrics and the probes only: no archive, no secret.
 * `operatorPort`: the operator's and the webhook's when they serve on another port than the
 * agents' (`--metrics-port`, the chart's metrics.port); both ports are then open on all three.
 */
export function metricsIngress(operatorPort: number = PORTS.metrics): Built {
  const ports = [...new Set([PORTS.metrics, operatorPort])].filter((p) => Number.isInteger(p) && p > 0 && p <= 65535);
  const p = policy("classcache-metrics", undefined, [{ ports: ports.flatMap(tcp) }]);
  const podSelector = { matchLabels: PART_OF, matchExpressions: [{ key: COMPONENT_LABEL, operator: "In", values: [COMPONENTS.agent, COMPONENTS.operator, COMPONENTS.webhook] }] };
  return { ...p, spec: { ...(p.spec as object), podSelector } };
}

/** `metricsPort`: the operator's own (see metricsIngress); 0 or absent: the agents' alone. */
export function networkPolicies(opts: { metricsPort?: number } = {}): Built[] {
  return [defaultDenyIngress(), directoryIngress(), agentsIngress(), webhookIngress(), metricsIngress(opts.metricsPort || PORTS.metrics)];
}
