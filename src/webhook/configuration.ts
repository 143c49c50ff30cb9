/**
 * The webhook configurations the API server reads — which requests it sends to the webhook, where,
 * and which CA to trust — built by pure functions, and the registrar that server-side-applies them
 * and re-applies the caBundle whenever the certificates rotate.
 */
import type { KubeClient } from "../kube/client.ts";
import { isNotFound } from "../kube/errors.ts";
import { resourceType } from "../kube/resource.ts";
import type { KubeObject } from "../kube/types.ts";
import { apply } from "../operator/apply.ts";
import { realClock, sleep, type Clock } from "../operator/runtime/clock.ts";
import type { Logger } from "../runtime/log.ts";
import type { Runnable } from "../runtime/runnable.ts";
import type { CertSource } from "./certs.ts";
import { WEBHOOK_PATHS } from "./server.ts";
// Pods carrying INJECT_LABEL (any value: the ClassCache's name) are sent to the webhook.
import { FIELD_MANAGER, INJECT_LABEL, NAMES } from "../operator/constants.ts";

export const WEBHOOK_CONFIGURATION_NAME = NAMES.webhook;
export const POD_WEBHOOK = "pods.classcache.dev";
export const CLASSCACHE_WEBHOOK = "classcaches.classcache.dev";
/** cert-manager's cainjector fills caBundle from this Certificate ("<namespace>/<name>"). */
export const INJECT_CA_ANNOTATION = "cert-manager.io/inject-ca-from";

export const MutatingWebhookConfigurations = resourceType(
  "admissionregistration.k8s.io/v1",
  "MutatingWebhookConfiguration",
  "mutatingwebhookconfigurations",
  false,
);
export const ValidatingWebhookConfigurations = resourceType(
  "admissionregistration.k8s.io/v1",
  "ValidatingWebhookConfiguration",
  "validatingwebhookconfigurations",
  false,
);

/** How the API server reaches the webhook: through a Service (in cluster) or a URL (outside). */
export type WebhookTarget =
  | { service: { namespace: string; name: string; port?: number } }
  /** The server's base URL, e.g. https://127.0.0.1:9443; the webhook paths are appended. */
  | { url: string };

export interface WebhookConfigurationOptions {
  /** The operator's namespace: its own pods are never sent to the webhook. */
  operatorNamespace: string;
  target: WebhookTarget;
  /** PEM of the CA bundle; omitted when cert-manager's cainjector fills it. */
  caBundle?: string;
  /** "<namespace>/<Certificate>" for cert-manager's cainjector. */
  certManagerInjectFrom?: string;
  /** The resource the validating webhook checks (default classcaches in classcache.dev/v1). */
  classCaches?: { group: string; version: string; resource: string };
  name?: string;
  timeoutSeconds?: number;
}

const DEFAULT_CLASSCACHES = { group: "classcache.dev", version: "v1", resource: "classcaches" };

function clientConfig(opts: WebhookConfigurationOptions, path: string): Record<string, unknown> {
  const ca = opts.caBundle ? { caBundle: Buffer.from(opts.caBundle).toString("base64") } : {};
  if ("url" in opts.target) return { url: `${opts.target.url.replace(/\/+$/, "")}${path}`, ...ca };
  const { namespace, name, port } = opts.target.service;
  return { service: { namespace, name, path, port: port ?? 443 }, ...ca };
}

function metadata(opts: WebhookConfigurationOptions): KubeObject["metadata"] {
  return {
    name: opts.name ?? WEBHOOK_CONFIGURATION_NAME,
    labels: { "app.kubernetes.io/name": "classcache", "app.kubernetes.io/component": "webhook", "app.kubernetes.io/managed-by": FIELD_MANAGER },
    ...(opts.certManagerInjectFrom ? { annotations: { [INJECT_CA_ANNOTATION]: opts.certManagerInjectFrom } } : {}),
  };
}

/**
 * Pods labelled classcache.dev/inject, on CREATE, outside kube-system and the operator's own
 * namespace. failurePolicy Ignore: a webhook that is down, slow or wrong never blocks a pod.
 */
export function mutatingWebhookConfiguration(opts: WebhookConfigurationOptions): KubeObject {
  return {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "MutatingWebhookConfiguration",
    metadata: metadata(opts),
    webhooks: [
      {
        name: POD_WEBHOOK,
        admissionReviewVersions: ["v1"],
        clientConfig: clientConfig(opts, WEBHOOK_PATHS.mutatePods),
        rules: [{ operations: ["CREATE"], apiGroups: [""], apiVersions: ["v1"], resources: ["pods"], scope: "Namespaced" }],
        objectSelector: { matchExpressions: [{ key: INJECT_LABEL, operator: "Exists" }] },
        namespaceSelector: {
          matchExpressions: [
            // Namespaces whose Pod Security level forbids hostPath are not left out: there the
            // patch mounts the store through the agent's CSI driver, or, without it, adds nothing.
            { key: "kubernetes.io/metadata.name", operator: "NotIn", values: ["kube-system", opts.operatorNamespace] },
          ],
        },
        failurePolicy: "Ignore",
        matchPolicy: "Equivalent",
        sideEffects: "None",
        timeoutSeconds: opts.timeoutSeconds ?? 5,
        reinvocationPolicy: "IfNeeded",
      },
    ],
  };
}

/**
 * ClassCaches on CREATE and UPDATE. failurePolicy Ignore: the CRD's schema and CEL rules are the
 * hard line; this webhook adds the checks they cannot express.
 */
export function validatingWebhookConfiguration(opts: WebhookConfigurationOptions): KubeObject {
  const cc = opts.classCaches ?? DEFAULT_CLASSCACHES;
  return {
    apiVersion: "admissionregistration.k8s.io/v1",
    kind: "ValidatingWebhookConfiguration",
    metadata: metadata(opts),
    webhooks: [
      {
        name: CLASSCACHE_WEBHOOK,
        admissionReviewVersions: ["v1"],
        clientConfig: clientConfig(opts, WEBHOOK_PATHS.validateClassCaches),
        rules: [{ operations: ["CREATE", "UPDATE"], apiGroups: [cc.group], apiVersions: [cc.version], resources: [cc.resource], scope: "*" }],
        failurePolicy: "Ignore",
        matchPolicy: "Equivalent",
        sideEffects: "None",
        timeoutSeconds: opts.timeoutSeconds ?? 5,
      },
    ],
  };
}

/** Applies both configurations (server-side apply, field manager classcache-operator). */
export async function applyWebhookConfigurations(client: KubeClient, opts: WebhookConfigurationOptions, signal?: AbortSignal): Promise<void> {
  await apply(client, MutatingWebhookConfigurations, mutatingWebhookConfiguration(opts), { signal });
  await apply(client, ValidatingWebhookConfigurations, validatingWebhookConfiguration(opts), { signal });
}

/** Deletes both configurations; ones already gone are fine. */
export async function removeWebhookConfigurations(client: KubeClient, name = WEBHOOK_CONFIGURATION_NAME, signal?: AbortSignal): Promise<void> {
  for (const rt of [MutatingWebhookConfigurations, ValidatingWebhookConfigurations]) {
    try {
      await client.delete(rt, name, signal ? { signal } : {});
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
}

export interface WebhookRegistrarOptions extends Omit<WebhookConfigurationOptions, "caBundle"> {
  client: KubeClient;
  certs: CertSource;
  logger: Logger;
  clock?: Clock;
  /** Delay before retrying a failed apply, default 5 s. */
  retryMs?: number;
}

/**
 * Keeps the configurations applied with the current CA bundle: once the certificates are ready,
 * and again after every rotation. With certificates from cert-manager it applies them without
 * caBundle (cainjector owns that field), so its applies never undo the injection.
 */
export class WebhookRegistrar implements Runnable {
  readonly name = "webhook-registrar";
  readonly #opts: WebhookRegistrarOptions;
  readonly #log: Logger;
  /** The bundle the configurations should carry, and the one they were last applied with. */
  #wanted: string | undefined;
  #applied: string | undefined;
  #everApplied = false;
  #wake: () => void = () => {};

  constructor(opts: WebhookRegistrarOptions) {
    this.#opts = opts;
    this.#log = opts.logger.with({ component: "webhook-registrar" });
  }

  /** True once the configurations were applied (with the bundle of that moment). */
  registered(): boolean {
    return this.#everApplied;
  }

  async start(signal: AbortSignal): Promise<void> {
    const { certs } = this.#opts;
    if (!certs.managesCaBundle && !this.#opts.certManagerInjectFrom) {
      this.#log.warn("webhook caBundle is managed by nobody", { hint: "set certManagerInjectFrom so cert-manager's cainjector fills it" });
    }
    this.#wanted = bundleOf(certs, (await certs.ready(signal)).caPem);
    const unsubscribe = certs.subscribe((next) => {
      this.#wanted = bundleOf(certs, next.caPem);
      this.#wake();
    });
    try {
      await this.#loop(signal);
    } finally {
      unsubscribe();
    }
  }

  async #loop(signal: AbortSignal): Promise<void> {
    const clock = this.#opts.clock ?? realClock;
    while (!signal.aborted) {
      const wanted = this.#wanted;
      if (this.#everApplied && wanted === this.#applied) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            signal.removeEventListener("abort", done);
            resolve();
          };
          this.#wake = done;
          signal.addEventListener("abort", done, { once: true });
        });
        continue;
      }
      try {
        await applyWebhookConfigurations(this.#opts.client, { ...this.#opts, ...(wanted ? { caBundle: wanted } : {}) }, signal);
        this.#applied = wanted;
        this.#everApplied = true;
        this.#log.info("webhook configurations applied", { name: this.#opts.name ?? WEBHOOK_CONFIGURATION_NAME, caBundle: wanted !== undefined });
      } catch (err) {
        if (signal.aborted) break;
        const retryMs = this.#opts.retryMs ?? 5_000;
        this.#log.error("webhook configurations not applied", { error: (err as Error)?.message ?? String(err), retryMs });
        await sleep(clock, retryMs, signal);
      }
    }
  }
}

function bundleOf(certs: CertSource, caPem: string): string | undefined {
  return certs.managesCaBundle && caPem ? caPem : undefined;
}
