/**
 * A real kube-apiserver backed by a real etcd, on loopback, for integration tests. The binaries
 * (and helm, for the chart's tests) are built from source once per machine by
 * scripts/testenv/build-binaries.sh and cached.
 *
 * There is no kube-controller-manager, scheduler or kubelet: objects are stored and validated,
 * admission (including webhooks) and RBAC run, but nothing reconciles them.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { KubeConfig } from "@kubernetes/client-node";
import { stringify } from "yaml";
import { apiRequest, type ApiTarget } from "./http.ts";
import { applyManifests, loadManifests } from "./manifests.ts";
import { readSelfSignedCa, selfSignedCertFile, writeApiserverCredentials, type ApiserverCredentials } from "./pki.ts";
import {
  freeLoopbackPorts,
  logTail,
  signalGroup,
  startServerProcess,
  stopProcessGroup,
  waitUntilReady,
  type ServerProcess,
} from "./processes.ts";

export interface TestEnvOptions {
  /** Working directory: logs, kubeconfig, keys and the etcd data dir go here. */
  dir: string;
  /** YAML files (multi-document) to apply once the API server is ready. */
  manifests?: string[];
  log?: (line: string) => void;
}

export interface TestEnv {
  kubeconfigPath: string;
  /** https://127.0.0.1:<port> */
  server: string;
  /** Bearer token of an admin user (group system:masters). */
  token: string;
  /** CA that signed the API server's serving certificate. */
  caPem: string;
  /** Where kube-apiserver and etcd came from; ../versions.txt says what they are. */
  binDir: string;
  ports: { apiserver: number; etcdClient: number; etcdPeer: number };
  pids: { etcd: number; kubeApiserver: number };
  /** Stops both servers and waits for them to exit. Safe to call more than once. */
  stop(): Promise<void>;
  /** Leaves the servers running after this Node process exits (used by the CLI's `up`). */
  detach(): void;
}

export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
const BUILD_SCRIPT = join(REPO_ROOT, "scripts/testenv/build-binaries.sh");
const ETCD_READY_TIMEOUT_MS = 60_000;
const APISERVER_READY_TIMEOUT_MS = 120_000;
const SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16";
const SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local";

export async function startTestEnv(opts: TestEnvOptions): Promise<TestEnv> {
  const log = opts.log ?? (() => {});
  const dir = resolve(opts.dir);
  const manifests = loadManifests(opts.manifests ?? []); // fail on bad YAML before starting anything
  const binDir = await ensureBinaries(log);
  const [etcdClient, etcdPeer, apiserver] = (await freeLoopbackPorts(3)) as [number, number, number];
  const ports = { apiserver, etcdClient, etcdPeer };
  const creds = prepareDir(dir);

  const running = new RunningServers();
  try {
    const etcd = running.add(startServerProcess("etcd", join(binDir, "etcd"), etcdArgs(dir, ports), join(dir, "etcd.log")));
    await waitForEtcd(etcd, ports.etcdClient);
    log(`etcd ready on 127.0.0.1:${ports.etcdClient}`);

    const api = running.add(
      startServerProcess(
        "kube-apiserver",
        join(binDir, "kube-apiserver"),
        kubeApiserverArgs(creds, ports),
        join(dir, "kube-apiserver.log"),
      ),
    );
    const server = `https://127.0.0.1:${ports.apiserver}`;
    const caPem = await waitForApiserver(api, server, creds);
    log(`kube-apiserver ready at ${server}`);

    const kubeconfigPath = join(dir, "kubeconfig");
    writeFileSync(kubeconfigPath, kubeconfigYaml(server, caPem, creds.adminToken), { mode: 0o600 });
    if (manifests.length > 0) await applyManifests(loadKubeConfig(kubeconfigPath), kubeconfigPath, manifests, log);

    return {
      kubeconfigPath,
      server,
      token: creds.adminToken,
      caPem,
      binDir,
      ports,
      pids: { etcd: etcd.pid, kubeApiserver: api.pid },
      stop: () => running.stop(),
      detach: () => running.detach(),
    };
  } catch (err) {
    await running.stop();
    throw err;
  }
}

/** kube-apiserver and etcd: runs the build script (a no-op when cached) and returns their bin dir. */
export async function ensureBinaries(log: (line: string) => void): Promise<string> {
  const binDir = await runBuildScript("control-plane", log);
  if (!existsSync(join(binDir, "kube-apiserver")) || !existsSync(join(binDir, "etcd"))) {
    throw new Error(`${BUILD_SCRIPT} did not print a bin dir with kube-apiserver and etcd (got ${binDir})`);
  }
  return binDir;
}

let helm: Promise<string> | undefined;

/**
 * The helm binary, built from source by the same script (its `helm` set) once per machine and
 * cached there; looked up once per process. Tests that need helm build it rather than skip.
 */
export function ensureHelm(log: (line: string) => void = () => {}): Promise<string> {
  helm ??= runBuildScript("helm", log).then(
    (binDir) => {
      const path = join(binDir, "helm");
      if (!existsSync(path)) throw new Error(`${BUILD_SCRIPT} helm did not print a bin dir with helm (got ${binDir})`);
      return path;
    },
    (err: unknown) => {
      helm = undefined;
      throw err;
    },
  );
  return helm;
}

/** kubectl and the rest of the real-cluster tier's binaries (the script's `cluster` set): their bin dir. */
export async function ensureClusterBinaries(log: (line: string) => void = () => {}): Promise<string> {
  const binDir = await runBuildScript("cluster", log);
  if (!existsSync(join(binDir, "kubectl"))) throw new Error(`${BUILD_SCRIPT} cluster did not print a bin dir with kubectl (got ${binDir})`);
  return binDir;
}

/** Runs the build script for one set of binaries and returns the bin dir it prints last. */
async function runBuildScript(set: "control-plane" | "cluster" | "helm", log: (line: string) => void): Promise<string> {
  const child = spawn("bash", [BUILD_SCRIPT, set], { stdio: ["ignore", "pipe", "pipe"] });
  const stdout: string[] = [];
  const stderr: string[] = [];
  createInterface({ input: child.stdout }).on("line", (l) => stdout.push(l));
  createInterface({ input: child.stderr }).on("line", (l) => {
    stderr.push(l);
    log(`build: ${l}`);
  });
  const code = await new Promise<number | null>((res, rej) => {
    child.on("error", rej);
    child.on("close", res);
  });
  if (code !== 0) {
    throw new Error(`${BUILD_SCRIPT} ${set} failed (exit ${code}); last output:\n${stderr.slice(-30).join("\n")}`);
  }
  const binDir = stdout.filter((l) => l.trim() !== "").at(-1)?.trim();
  if (!binDir) throw new Error(`${BUILD_SCRIPT} ${set} printed no bin dir`);
  return binDir;
}

/** Fresh etcd data and credentials on every start; the rest of `dir` is left alone. */
function prepareDir(dir: string): ApiserverCredentials {
  mkdirSync(dir, { recursive: true });
  for (const sub of ["etcd-data", "pki"]) rmSync(join(dir, sub), { recursive: true, force: true });
  mkdirSync(join(dir, "pki"), { mode: 0o700 });
  return writeApiserverCredentials(join(dir, "pki"));
}

export function etcdArgs(dir: string, ports: { etcdClient: number; etcdPeer: number }): string[] {
  const client = `http://127.0.0.1:${ports.etcdClient}`;
  const peer = `http://127.0.0.1:${ports.etcdPeer}`;
  return [
    "--name=testenv",
    `--data-dir=${join(dir, "etcd-data")}`,
    `--listen-client-urls=${client}`,
    `--advertise-client-urls=${client}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=testenv=${peer}`,
    "--initial-cluster-state=new",
    // Test data is thrown away; skipping fsync makes every write much cheaper.
    "--unsafe-no-fsync",
    "--log-level=warn",
  ];
}

export function kubeApiserverArgs(creds: ApiserverCredentials, ports: { apiserver: number; etcdClient: number }): string[] {
  return [
    `--etcd-servers=http://127.0.0.1:${ports.etcdClient}`,
    "--bind-address=127.0.0.1",
    "--advertise-address=127.0.0.1",
    `--secure-port=${ports.apiserver}`,
    // No --tls-cert-file: the server self-signs into --cert-dir with 127.0.0.1 as a SAN.
    `--cert-dir=${creds.certDir}`,
    `--token-auth-file=${creds.tokenFile}`,
    "--authorization-mode=RBAC",
    `--service-cluster-ip-range=${SERVICE_CLUSTER_IP_RANGE}`,
    `--service-account-issuer=${SERVICE_ACCOUNT_ISSUER}`,
    `--service-account-key-file=${creds.serviceAccountPublicKey}`,
    `--service-account-signing-key-file=${creds.serviceAccountPrivateKey}`,
    "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,DefaultStorageClass,DefaultTolerationSeconds," +
      "ResourceQuota,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
    // Without kube-controller-manager no namespace gets a "default" ServiceAccount, and this plugin
    // would reject every Pod that does not name an existing one.
    "--disable-admission-plugins=ServiceAccount",
    // The reconciler would publish 127.0.0.1 as the endpoint of the "kubernetes" Service, which
    // validation rejects (loopback), logging an error every 10 s. Nothing in the tests needs it.
    "--endpoint-reconciler-type=none",
    "--allow-privileged=true",
    "--profiling=false",
  ];
}

async function waitForEtcd(etcd: ServerProcess, clientPort: number): Promise<void> {
  await waitUntilReady(etcd, ETCD_READY_TIMEOUT_MS, async () => {
    const res = await fetch(`http://127.0.0.1:${clientPort}/health`, { signal: AbortSignal.timeout(2000) });
    const body = (await res.json()) as { health?: string };
    return res.ok && body.health === "true" ? true : undefined;
  });
}

/** Waits for the self-signed certificate, then for /readyz; returns the CA. */
async function waitForApiserver(api: ServerProcess, server: string, creds: ApiserverCredentials): Promise<string> {
  let lastAnswer: string | undefined;
  return waitUntilReady(
    api,
    APISERVER_READY_TIMEOUT_MS,
    async () => {
      const caPem = readSelfSignedCa(selfSignedCertFile(creds.certDir));
      if (caPem === undefined) return undefined;
      const target: ApiTarget = { server, caPem, token: creds.adminToken };
      const res = await apiRequest(target, "/readyz?verbose", { timeoutMs: 5000 });
      if (res.status === 200) return caPem;
      lastAnswer = `HTTP ${res.status}: ${failedChecks(res.body)}`;
      return undefined;
    },
    () => lastAnswer,
  );
}

function failedChecks(readyzBody: string): string {
  const failed = readyzBody.split("\n").filter((l) => l.startsWith("[-]"));
  return (failed.length > 0 ? failed : readyzBody.split("\n").slice(0, 3)).join("; ");
}

function kubeconfigYaml(server: string, caPem: string, token: string): string {
  return stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "testenv", cluster: { server, "certificate-authority-data": Buffer.from(caPem).toString("base64") } }],
    users: [{ name: "testenv-admin", user: { token } }],
    contexts: [{ name: "testenv", context: { cluster: "testenv", user: "testenv-admin", namespace: "default" } }],
    "current-context": "testenv",
  });
}

export function loadKubeConfig(kubeconfigPath: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfigPath);
  return kc;
}

const CLEANUP_SIGNALS: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP"];

/**
 * The servers of one environment. The processes run in their own process groups, so they would
 * survive a test run that crashes or is interrupted; until stop() or detach(), they are killed
 * when this process exits or gets a terminating signal.
 */
class RunningServers {
  private readonly servers: ServerProcess[] = [];
  private stopping: Promise<void> | undefined;
  private readonly killAll = (): void => {
    for (const s of this.servers) signalGroup(s.pid, "SIGKILL");
  };
  private readonly onSignal = (signal: NodeJS.Signals): void => {
    this.killAll();
    this.unhook();
    // Nobody else handles it: let the signal do what it would have done without us.
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  };

  constructor() {
    process.on("exit", this.killAll);
    for (const sig of CLEANUP_SIGNALS) process.on(sig, this.onSignal);
  }

  add(server: ServerProcess): ServerProcess {
    this.servers.push(server);
    return server;
  }

  /** kube-apiserver first (it is the etcd client), then etcd. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.unhook();
      for (const s of [...this.servers].reverse()) {
        try {
          await stopProcessGroup(s.pid);
        } catch (err) {
          throw new Error(`cannot stop ${s.name}: ${(err as Error).message}; last log lines:\n${logTail(s.logFile)}`, {
            cause: err,
          });
        }
      }
    })();
    return this.stopping;
  }

  detach(): void {
    this.unhook();
  }

  private unhook(): void {
    process.off("exit", this.killAll);
    for (const sig of CLEANUP_SIGNALS) process.off(sig, this.onSignal);
  }
}
