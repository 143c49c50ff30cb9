/**
 * The cluster's shared parts, one set for every ClassCache: the directory (a managed Valkey
 * unless the ClassCaches name an external one), the node-agent DaemonSet, the keys and tokens
 * they use, and the NetworkPolicies around them. Reconciled as one singleton, whenever any
 * ClassCache changes; every write is a server-side apply through apply.ts (the operator's field
 * manager), so a second pass writes nothing.
 */
import { randomBytes } from "node:crypto";
import { sha256Hex } from "../util/hash.ts";
import { createPublicKey } from "node:crypto";
import { generateSigningKey, signerFromPem, trustStoreFromPems, type Signer, type TrustStore } from "../archive/signing.ts";
import type { KubeClient } from "../kube/client.ts";
import { isNotFound } from "../kube/errors.ts";
import { ConfigMaps, DaemonSets, NetworkPolicies, Secrets, Services, StatefulSets, type ResourceType } from "../kube/resource.ts";
import { keyOf, type KubeObject } from "../kube/types.ts";
import type { Logger } from "../runtime/log.ts";
import { resolveValkey, type ClassCache } from "./api/v1.ts";
import { apply } from "./apply.ts";
import { DIRECTORY_HOST, FIELD_MANAGER, NAMES, PORTS, SECRET_KEYS, SYSTEM_NAMESPACE } from "./constants.ts";
import { agentsDaemonSet, agentTokenSecret, signingKeySecret, trustConfigMap, type AgentsOptions, type ExternalDirectory } from "./objects/agents.ts";
import { directorySecret, directoryService, directoryStatefulSet, generatePassword } from "./objects/directory.ts";
import type { Built } from "./objects/meta.ts";
import { networkPolicies } from "./objects/networkpolicy.ts";

const TYPES: Record<string, ResourceType> = {
  Secret: Secrets,
  ConfigMap: ConfigMaps,
  Service: Services,
  StatefulSet: StatefulSets,
  DaemonSet: DaemonSets,
  NetworkPolicy: NetworkPolicies,
};

/** Which directory the cluster uses, decided from the ClassCaches: the oldest one's choice wins. */
export interface DirectoryChoice {
  managed: boolean;
  external?: ExternalDirectory;
  image?: string;
  storageSize?: string;
  storageClassName?: string;
  /** Who decided it. */
  from?: string;
}

export function chooseDirectory(all: ClassCache[]): DirectoryChoice {
  const live = all.filter((c) => !c.metadata.deletionTimestamp).sort((a, b) => (a.metadata.creationTimestamp ?? "").localeCompare(b.metadata.creationTimestamp ?? "") || keyOf(a).localeCompare(keyOf(b)));
  for (const cc of live) {
    let v;
    try {
      v = resolveValkey(cc.spec.valkey);
    } catch {
      continue;
    }
    const from = keyOf(cc);
    if (!v.create && v.addr) return { managed: false, external: { addr: v.addr, ...(v.passwordSecretRef ? { passwordSecret: v.passwordSecretRef } : {}) }, from };
    return { managed: true, image: v.image, storageSize: v.storageSize, ...(v.storageClassName ? { storageClassName: v.storageClassName } : {}), from };
  }
  return { managed: true };
}


/** What the cluster admin decides about the node agents (the operator's --observe-jvms and --agent-* flags). */
export type AgentSettings = Pick<AgentsOptions, "observeJvms" | "priorityClassName" | "imagePullPolicy" | "controlPlane" | "csi">;

export interface Credentials {
  trust: TrustStore;
  publicPem: string;
  /** What the operator signs build grants with (see BuildGrant). */
  signer: Signer | undefined;
  /** What could not be applied, for people (the Degraded condition). */
  problems: string[];
  /** The directory URL for the operator itself (status, clean-up). */
  directoryUrl: string | undefined;
}

export class Infrastructure {
  readonly #client: KubeClient;
  readonly #image: string;
  readonly #log: Logger;
  /** Outside the cluster the Service name does not resolve: the operator reaches a managed directory here instead. */
  readonly #directoryOverride: string | undefined;

  /** How the node agents run: host PID and CAP_SYS_PTRACE to see the node's JVMs (opt-in), priority, nodes, pull policy (see agentsDaemonSet). */
  readonly #agents: AgentSettings;
  /** The operator's metrics port, opened by the NetworkPolicy classcache-metrics next to the agents'. */
  readonly #metricsPort: number | undefined;

  constructor(opts: { client: KubeClient; image: string; log: Logger; directoryUrl?: string | undefined; agents?: AgentSettings | undefined; metricsPort?: number | undefined }) {
    this.#agents = { ...opts.agents };
    this.#metricsPort = opts.metricsPort;
    this.#client = opts.client;
    this.#image = opts.image;
    this.#log = opts.log;
    this.#directoryOverride = opts.directoryUrl;
  }

  /** Applies the cluster's shared parts for `choice` (see chooseDirectory). */
  async reconcile(choice: DirectoryChoice, signal?: AbortSignal): Promise<Credentials> {
    const signing = await this.#secret(NAMES.signingKey, () => {
      const k = generateSigningKey();
      return signingKeySecret(k.privatePem, k.publicPem);
    });
    const publicPem = signing[SECRET_KEYS.trust] ?? createPublicKey(signing[SECRET_KEYS.signingKey] ?? "").export({ type: "spki", format: "pem" }).toString();
    // While a rotation is under way (see keys.ts) the replaced keys are trusted too, everywhere.
    const trusted = [publicPem, signing[SECRET_KEYS.previous] ?? ""].join("\n").trim() + "\n";
    await this.#secret(NAMES.agentToken, () => agentTokenSecret(randomBytes(24).toString("hex")));
    const objects: Built[] = [trustConfigMap(trusted), ...networkPolicies({ ...(this.#metricsPort ? { metricsPort: this.#metricsPort } : {}) })];
    let password: string | undefined;
    if (choice.managed) {
      password = (await this.#secret(NAMES.directorySecret, () => directorySecret(generatePassword())))[SECRET_KEYS.password];
      objects.push(
        directoryService(),
        directoryStatefulSet(choice),
      );
    }
    objects.push(this.agents(choice, sha256Hex(trusted).slice(0, 16)));
    const problems: string[] = [];
    for (const o of objects) {
      try {
        await this.apply(o, signal);
      } catch (err) {
        // A StatefulSet's volume claims are immutable: a new storage size or class for an
        // existing directory is refused. Say so, and keep the directory as it is.
        if (o.kind !== "StatefulSet" || (err as { status?: number }).status !== 422) throw err;
        problems.push(
          `the directory's storage cannot be changed in place (StatefulSet volume claims are immutable), so spec.valkey.storageSize/storageClassName of ${choice.from ?? "the oldest ClassCache"} is not applied; to resize, delete the StatefulSet ${NAMES.directory} in ${SYSTEM_NAMESPACE} with --cascade=orphan and resize its PersistentVolumeClaim`,
        );
      }
    }
    return { trust: trustStoreFromPems([trusted]), publicPem, signer: signing[SECRET_KEYS.signingKey] !== undefined ? signerFromPem(signing[SECRET_KEYS.signingKey]!) : undefined, directoryUrl: await this.#operatorDirectoryUrl(choice, password), problems };
  }

  /** The node agents' DaemonSet for `choice`, started with the trusted keys whose digest is `trustDigest`. */
  agents(choice: DirectoryChoice, trustDigest: string): Built {
    return agentsDaemonSet({ ...this.#agents, image: this.#image, trustDigest, ...(choice.external ? { directory: choice.external } : {}) });
  }

  async apply(o: Built, signal?: AbortSignal): Promise<KubeObject> {
    const rt = TYPES[o.kind];
    if (!rt) throw new Error(`no resource type for ${o.kind}`);
    return apply(this.#client, rt, o, { signal });
  }

  /** A Secret's data, creating it once with generated values: never regenerated, so keys and passwords stay stable. */
  async #secret(name: string, make: () => Built): Promise<Record<string, string>> {
    try {
      return decode(await this.#client.get<KubeObject & { data?: Record<string, string> }>(Secrets, name, { namespace: SYSTEM_NAMESPACE }));
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    this.#log.info("creating secret", { name });
    try {
      return decode(await this.#client.create(Secrets, make(), { namespace: SYSTEM_NAMESPACE, fieldManager: FIELD_MANAGER }));
    } catch (err) {
      // Another operator replica created it first: use theirs.
      if ((err as { status?: number }).status === 409) return decode(await this.#client.get(Secrets, name, { namespace: SYSTEM_NAMESPACE }));
      throw err;
    }
  }

  async #operatorDirectoryUrl(choice: DirectoryChoice, managedPassword: string | undefined): Promise<string | undefined> {
    if (choice.managed) {
      const host = this.#directoryOverride ?? `${DIRECTORY_HOST}:${PORTS.directory}`;
      return `redis://:${encodeURIComponent(managedPassword ?? "")}@${host}`;
    }
    const ext = choice.external!;
    if (!ext.passwordSecret) return `${ext.tls ? "rediss" : "redis"}://${ext.addr}`;
    const data = decode(await this.#client.get(Secrets, ext.passwordSecret.name, { namespace: SYSTEM_NAMESPACE }).catch(() => ({ metadata: { name: "" } })));
    const pw = data[ext.passwordSecret.key];
    return pw === undefined ? undefined : `${ext.tls ? "rediss" : "redis"}://:${encodeURIComponent(pw)}@${ext.addr}`;
  }
}

function decode(secret: KubeObject & { data?: Record<string, string>; stringData?: Record<string, string> }): Record<string, string> {
  const out: Record<string, string> = { ...(secret.stringData ?? {}) };
  for (const [k, v] of Object.entries(secret.data ?? {})) out[k] = Buffer.from(v, "base64").toString("utf8");
  return out;
}
