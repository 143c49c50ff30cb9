/** `classcache node`: the per-node agent. Wires the store, the directory, the peer server and the local API. */
import { readFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { join } from "node:path";
import type { Server } from "node:http";
import { loadTrustStore, signerFromPem } from "../archive/signing.ts";
import type { Directory } from "../directory/directory.ts";
import { openDirectory, redact, withPassword } from "../directory/open.ts";
import { NodeAgent } from "../node/agent.ts";
import { createApiServer, createScopeSocketServer, createSocketServer, Wants } from "../node/api.ts";
import { listenSocket, ScopeSockets } from "../node/sockets.ts";
import { NodeMetrics } from "../node/metrics.ts";
import { createPeerServer, type BlobSource } from "../p2p/server.ts";
import { ClasscacheError, usageError } from "../runtime/errors.ts";
import { HealthServer } from "../runtime/health.ts";
import { createLogger, type Logger } from "../runtime/log.ts";
import { RUN_DIR } from "../store/scopes.ts";
import { LocalStore } from "../store/store.ts";
import { parse, type Command } from "./command.ts";

const usage = `
usage: classcache node --name <node> --store <dir> --directory <url> --token-file <file> --trust <pub.pem> [options]

The per-node agent: one per node, serving every app. It keeps the node's content-addressed
store, serves verified archives to peers (read-only, by digest, authenticated), pulls or
builds archives on request, and heartbeats what it holds to the directory.

  --name <node>            this node's name, unique in the cluster
  --zone <zone>            its zone; pulls prefer holders in the same zone (default "default")
  --store <dir>            the store directory
  --root <dir>             where workload JVMs see the store (default: --store; in Kubernetes /var/lib/classcache)
  --directory <url>        redis://:password@host:port, valkey://…, or http://… (an embedded directory server)
  --directory-password-file <file>
                           the directory's password, kept off the command line
  --token-file <file>      the shared token peers and local clients must present
  --trust <pub.pem>        a public key whose manifests this node accepts (repeatable)
  --signing-key <key.pem>  an Ed25519 private key: lets this node build and publish archives asked
                           of its local API — outside a cluster only (the demo, a bare host); in a
                           cluster agents hold no key and the operator signs what builds offer
  --listen <host:port>     peer server (default 0.0.0.0:7071)
  --advertise <url>        how peers reach this node (default http://<listen>)
  --api <host:port>        local API for the node's workloads and tools (default 127.0.0.1:7072)
  --metrics <host:port>    also serve /metrics, /healthz and /readyz here, apart from the peer port
                           (which needs the token for archives), so Prometheus can be let in alone
  --socket <path>          Unix socket for build Jobs' uploads and wants (default <store>/run/agent.sock);
                           patched pods ask for their ref at <store>/scopes/<scope>/run/agent.sock
  --jdk <JAVA_HOME>        a JDK that builds asked of the local API may use (repeatable); a
                           build request names one of these, never a path of its own
  --upload-cap <n>         concurrent uploads to peers (default 4; more get 503)
  --max-upload-rate <b/s>  upload bandwidth limit for the whole node (default none)
  --quota <bytes>          store size above which least recently used archives are removed (default 20 GiB)
  --lease-ttl <seconds>    build lease lifetime; a dead builder's lease expires after it (default 30)
  --holder-ttl <seconds>   holder entries expire this long after the last heartbeat (default 30)
  --heartbeat <seconds>    how often holdings are re-announced (default 10)
  --want-retry <seconds>   how often refs that pods asked for are looked up again (default 10)
  --log-format text|json
`;

function hostPort(s: string, flag: string): { host: string; port: number } {
  const m = /^(.*):(\d+)$/.exec(s);
  if (!m) throw usageError(`${flag} ${s} is not host:port`);
  return { host: m[1] || "0.0.0.0", port: Number(m[2]) };
}

async function listen(server: Server, hp: { host: string; port: number }, what: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => reject(new ClasscacheError("input", `cannot listen on ${hp.host}:${hp.port} for the ${what}`, { cause: err })));
    server.listen(hp.port, hp.host, () => resolve());
  });
}

export const nodeCommand: Command = {
  name: "node",
  summary: "run the per-node agent: store, peer server, puller, build coordination",
  usage,
  async run(argv, io) {
    const { values } = parse("node", argv, {
      name: { type: "string" },
      zone: { type: "string", default: "default" },
      store: { type: "string" },
      root: { type: "string" },
      directory: { type: "string" },
      "directory-password-file": { type: "string" },
      "token-file": { type: "string" },
      trust: { type: "string", multiple: true },
      "signing-key": { type: "string" },
      listen: { type: "string", default: "0.0.0.0:7071" },
      advertise: { type: "string" },
      api: { type: "string", default: "127.0.0.1:7072" },
      metrics: { type: "string" },
      socket: { type: "string" },
      jdk: { type: "string", multiple: true },
      "upload-cap": { type: "string", default: "4" },
      "max-upload-rate": { type: "string" },
      quota: { type: "string", default: String(20 * 1024 ** 3) },
      "log-format": { type: "string", default: "text" },
      "lease-ttl": { type: "string", default: "30" },
      "holder-ttl": { type: "string", default: "30" },
      heartbeat: { type: "string", default: "10" },
      "want-retry": { type: "string", default: "10" },
    });
    const seconds = (flag: "lease-ttl" | "holder-ttl" | "heartbeat" | "want-retry") => {
      const n = Number(values[flag]);
      if (!(n > 0)) throw usageError(`--${flag} must be a positive number of seconds`);
      return n * 1000;
    };
    for (const f of ["name", "store", "directory", "token-file"] as const) if (!values[f]) throw usageError(`--${f} is required`);
    if (!values.trust?.length) throw usageError("--trust <pub.pem> is required: a node accepts only manifests signed by keys it trusts");
    const log = createLogger({ format: values["log-format"] === "json" ? "json" : "text" }, { node: values.name });
    const token = (await readFile(values["token-file"]!, "utf8")).trim();
    if (token.length < 16) throw new ClasscacheError("input", "the token is shorter than 16 characters", { hint: "use a long random token, e.g. openssl rand -hex 24" });
    const trust = await loadTrustStore(values.trust);
    const signer = values["signing-key"] ? signerFromPem(await readFile(values["signing-key"], "utf8")) : undefined;
    const store = await LocalStore.open(values.store!);
    const directoryAt = values["directory-password-file"] ? withPassword(values.directory!, (await readFile(values["directory-password-file"], "utf8")).trim()) : values.directory!;
    const directory = openDirectory(directoryAt, { token, log });
    const listenAt = hostPort(values.listen, "--listen");
    const apiAt = hostPort(values.api, "--api");
    const metricsAt = values.metrics ? hostPort(values.metrics, "--metrics") : undefined;
    const metrics = new NodeMetrics();
    const agent = new NodeAgent({
      node: values.name!,
      zone: values.zone,
      url: values.advertise ?? `http://${listenAt.host === "0.0.0.0" ? "127.0.0.1" : listenAt.host}:${listenAt.port}`,
      store,
      root: values.root ?? store.dir,
      directory,
      trust,
      signer,
      token,
      log,
      metrics,
      leaseTtlMs: seconds("lease-ttl"),
      uploadBudget: Number(values["upload-cap"]),
      holderTtlMs: seconds("holder-ttl"),
    });
    // Serve only blobs that a verified manifest names: in the store, or being pulled (and already verified by digest).
    const blobs: BlobSource = {
      open: async (sha) => {
        const size = (await store.servableBlobSize(sha)) ?? (await agent.servableWhilePulling(sha));
        return size === undefined ? undefined : { path: store.blobPath(sha), size };
      },
    };
    const peer = createPeerServer({
      blobs,
      token,
      uploadCap: Number(values["upload-cap"]),
      ...(values["max-upload-rate"] ? { maxUploadBytesPerSec: Number(values["max-upload-rate"]) } : {}),
      metrics: metrics.peer,
      log,
      admit: (sha) => agent.admitUpload(sha),
      delivered: (sha) => agent.noteDelivered(sha),
      ready: () => directory.ping(),
    });
    const api = createApiServer(agent, { token, jdks: values.jdk ?? [] });
    const wants = new Wants(agent);
    // Build Jobs upload over the socket under the operator's grants; the node signs what it admits.
    const socketServer = createSocketServer(wants, { agent });
    const socketPath = values.socket ?? join(store.dir, RUN_DIR, "agent.sock");
    await listen(peer, listenAt, "peer server");
    await listen(api, apiAt, "local API");
    await listenSocket(socketServer, socketPath);
    // Patched pods see only their scope's view of the store: the agent listens in each view.
    const scopeSockets = new ScopeSockets(store.dir, (scope) => createScopeSocketServer(wants, scope), log);
    const stopScopeSockets = new AbortController();
    const scopeSocketsDone = scopeSockets.start(stopScopeSockets.signal).catch((err: unknown) => log.warn("scope sockets stopped", { error: String(err) }));
    const stopMetrics = new AbortController();
    const metricsServer = metricsAt
      ? new HealthServer({ port: metricsAt.port, host: metricsAt.host, logger: log, metrics: metrics.peer.registry })
          .addHealthCheck("ping", () => true)
          .addReadyCheck("directory", () => directory.ping())
      : undefined;
    const metricsDone = metricsServer?.start(stopMetrics.signal);
    if (metricsServer) await Promise.race([metricsServer.listening(), metricsDone]);
    log.info("node agent started", { store: store.dir, directory: redact(values.directory!), peer: values.listen, api: values.api, builder: signer !== undefined });
    const quota = Number(values.quota);
    const heartbeat = setInterval(() => {
      agent.heartbeat().catch((err: unknown) => log.warn("heartbeat failed", { error: String(err) }));
    }, seconds("heartbeat"));
    const retryWants = setInterval(() => {
      wants.tick();
      void scopeSockets.scan();
    }, seconds("want-retry"));
    // A publication is when a wanted ref may have become available: try the wants then, not at
    // the next tick, so a node whose pods wanted an archive holds it moments after it is bound.
    const stopFollowing = new AbortController();
    const following = followPublications(directory, stopFollowing.signal, () => wants.tick(), log);
    let collecting = false; // gc waits for the store lock: never let calls pile up behind a long build
    const gc = setInterval(() => {
      if (collecting) return;
      collecting = true;
      store
        .gc({ quotaBytes: quota, protect: agent.protectedKeys() })
        .then(
          (r) => {
            if (r.removedKeys.length) log.info("gc removed archives", { keys: r.removedKeys.length, freedBytes: r.freedBytes });
          },
          (err: unknown) => log.warn("gc failed", { error: String(err) }),
        )
        .finally(() => (collecting = false));
    }, 60_000);
    await agent.heartbeat().catch(() => {});
    await new Promise<void>((resolve) => io.signal.addEventListener("abort", () => resolve(), { once: true }));
    log.info("node agent stopping");
    clearInterval(heartbeat);
    clearInterval(retryWants);
    clearInterval(gc);
    stopFollowing.abort();
    await following;
    await agent.withdrawAll();
    peer.closeAllConnections();
    stopMetrics.abort();
    stopScopeSockets.abort();
    await Promise.all([new Promise((r) => peer.close(r)), new Promise((r) => api.close(r)), new Promise((r) => socketServer.close(r)), metricsDone, scopeSocketsDone]);
    api.closeAllConnections();
    await directory.close();
    return 0;
  },
};

/** Calls `onPublished` for every "published" event of the directory until `signal` aborts; survives directory outages. */
async function followPublications(directory: Directory, signal: AbortSignal, onPublished: () => void, log: Logger): Promise<void> {
  let after: string | undefined;
  while (!signal.aborted) {
    try {
      after ??= await directory.lastEventId();
      const events = await directory.readEvents(after, 30_000, signal);
      for (const e of events) {
        after = e.id;
        if (e.event.type === "published") onPublished();
      }
    } catch (err) {
      if (signal.aborted) break;
      log.debug("following the directory's events failed; again in a second", { error: String(err) });
      await sleep(1000, undefined, { signal }).catch(() => {});
    }
  }
}
