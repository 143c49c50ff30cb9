/**
 * The managed directory: one Valkey for the whole cluster (which node holds which archive, build
 * leases, events), with a password from the start and its data on a volume.
 */
import { randomBytes } from "node:crypto";
import { COMPONENTS, NAMES, PORTS, SECRET_KEYS, SYSTEM_NAMESPACE } from "../constants.ts";
import { lockedDown, objectLabels, secretEnv, selectorLabels, systemSecret, type Built } from "./meta.ts";

/** The CRD's default for spec.valkey.image. */
export const DEFAULT_DIRECTORY_IMAGE = "valkey/valkey:7.2-alpine";
/** The valkey user and group of the official image (alpine and debian variants alike). */
const VALKEY_UID = 999;
const VALKEY_GID = 1000;
const DATA_DIR = "/data";

/** 32 random bytes, base64url: safe in a file, an environment variable and a redis:// URL alike. */
export function generatePassword(): string {
  return randomBytes(32).toString("base64url");
}

export function directorySecret(password: string): Built {
  return systemSecret(NAMES.directorySecret, COMPONENTS.directory, { [SECRET_KEYS.password]: password });
}

export function directoryService(): Built {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: NAMES.directory, namespace: SYSTEM_NAMESPACE, labels: objectLabels(COMPONENTS.directory) },
    spec: {
      type: "ClusterIP",
      selector: selectorLabels(COMPONENTS.directory),
      ports: [{ name: "valkey", port: PORTS.directory, targetPort: "valkey", protocol: "TCP" }],
    },
  };
}

export interface DirectoryOptions {
  /** A valkey/valkey image (spec.valkey.image). */
  image?: string;
  /** Size of the data volume, a quantity such as 256Mi (spec.valkey.storageSize). */
  storageSize?: string;
  /** Storage class of the data volume; the cluster default when absent. */
  storageClassName?: string;
}

// Exit status of a probe is the test: valkey-cli exits 0 even for an error reply, so grep for the answer.
// The password comes from REDISCLI_AUTH (read by valkey-cli), never from -a: it stays off the process list.
const READY = "valkey-cli -h 127.0.0.1 ping | grep -q PONG";
// A Valkey replaying a large append-only file answers LOADING: alive, just not ready yet.
const ALIVE = "valkey-cli -h 127.0.0.1 ping | grep -qE 'PONG|LOADING'";

export function directoryStatefulSet(opts: DirectoryOptions = {}): Built {
  const labels = objectLabels(COMPONENTS.directory);
  const password = secretEnv("VALKEY_PASSWORD", NAMES.directorySecret, SECRET_KEYS.password);
  const cliAuth = secretEnv("REDISCLI_AUTH", NAMES.directorySecret, SECRET_KEYS.password);
  return {
    apiVersion: "apps/v1",
    kind: "StatefulSet",
    metadata: { name: NAMES.directory, namespace: SYSTEM_NAMESPACE, labels },
    spec: {
      replicas: 1,
      serviceName: NAMES.directory,
      selector: { matchLabels: selectorLabels(COMPONENTS.directory) },
      updateStrategy: { type: "RollingUpdate" },
      template: {
        metadata: { labels },
        spec: {
          // Valkey never talks to the API server.
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: VALKEY_UID,
            runAsGroup: VALKEY_GID,
            // The volume's files belong to the valkey group, whatever the provisioner created them as.
            fsGroup: VALKEY_GID,
            seccompProfile: { type: "RuntimeDefault" },
          },
          containers: [
            {
              name: "valkey",
              image: opts.image ?? DEFAULT_DIRECTORY_IMAGE,
              // $(VALKEY_PASSWORD) is expanded by the kubelet: the pod spec never holds the password.
              // Valkey replaces its process title ("valkey-server *:6379"), so it is not on the process list either.
              command: ["valkey-server"],
              args: ["--appendonly", "yes", "--appendfsync", "everysec", "--requirepass", "$(VALKEY_PASSWORD)", "--dir", DATA_DIR],
              env: [password, cliAuth],
              ports: [{ name: "valkey", containerPort: PORTS.directory, protocol: "TCP" }],
              readinessProbe: { exec: { command: ["sh", "-c", READY] }, periodSeconds: 5, timeoutSeconds: 3, failureThreshold: 3 },
              // Generous: restarting a directory loses nothing (AOF), but a restart loop helps no one.
              livenessProbe: { exec: { command: ["sh", "-c", ALIVE] }, initialDelaySeconds: 10, periodSeconds: 10, timeoutSeconds: 5, failureThreshold: 6 },
              resources: { requests: { cpu: "50m", memory: "64Mi" }, limits: { memory: "512Mi" } },
              securityContext: lockedDown({ runAsUser: VALKEY_UID, runAsGroup: VALKEY_GID }),
              volumeMounts: [{ name: "data", mountPath: DATA_DIR }],
            },
          ],
        },
      },
      volumeClaimTemplates: [
        {
          apiVersion: "v1",
          kind: "PersistentVolumeClaim",
          metadata: { name: "data", labels },
          spec: {
            accessModes: ["ReadWriteOnce"],
            resources: { requests: { storage: opts.storageSize ?? "256Mi" } },
            ...(opts.storageClassName ? { storageClassName: opts.storageClassName } : {}),
          },
        },
      ],
    },
  };
}
