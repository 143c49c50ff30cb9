/**
 * The CSI node plugin: lets pods mount their scope's view of the node's store as an inline
 * ephemeral CSI volume, where Pod Security (baseline, restricted) forbids a hostPath (docs/csi.md).
 *
 * Two gRPC servers on Unix sockets under the kubelet's directory: the CSI endpoint (Identity and
 * Node services) and the registration socket the kubelet's plugin watcher finds in
 * plugins_registry/. Publishing binds a directory of the store read-only at the kubelet's target
 * (what may be bound is decided in publish.ts); it never waits for an archive: a view that does
 * not exist yet is created empty. Calls for one target run one at a time.
 */
import { mkdir, realpath, rm, rmdir } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { Server, ServerCredentials, status, type handleUnaryCall, type UntypedServiceImplementation } from "@grpc/grpc-js";
import pkg from "../../../package.json" with { type: "json" };
import { ClasscacheError } from "../../runtime/errors.ts";
import { discardLogger, type Logger } from "../../runtime/log.ts";
import { aborted, type Runnable } from "../../runtime/runnable.ts";
import { ExecMounter, type Mounter } from "./mount.ts";
import { csiServices } from "./protos.ts";
import { checkTarget, isRefusal, planPublish, POD_NAME, POD_NAMESPACE, podsDir, type PublishPlan, type PublishRequest } from "./publish.ts";
import { CSI_DRIVER, KUBELET_DIR, STORE_ROOT } from "../../operator/constants.ts";

/** The CSI driver's name: the CSIDriver object's name and a pod volume's `csi.driver` (one definition, shared with the operator's pod patch). */
export { CSI_DRIVER };
/** The plugin registration API version the kubelet speaks with CSI plugins. */
export const CSI_SUPPORTED_VERSIONS = ["1.0.0"];

export interface CsiNodePluginOptions {
  /** The node's name, answered by NodeGetInfo. */
  nodeName: string;
  /** The store as this process sees it (default /var/lib/classcache). */
  store?: string;
  /** The kubelet's --root-dir, at the same path in this process as on the host (default /var/lib/kubelet). */
  kubeletDir?: string;
  driverName?: string;
  log?: Logger;
  mounter?: Mounter;
  /** How long in-flight calls may take to finish on shutdown before the servers are closed hard (default 5 s). */
  shutdownTimeoutMs?: number;
}

/** Where the plugin serves CSI: `<kubeletDir>/plugins/<driver>/csi.sock`. */
export function csiSocketPath(kubeletDir: string, driver: string): string {
  return join(kubeletDir, "plugins", driver, "csi.sock");
}

/** Where the kubelet's plugin watcher finds the plugin: `<kubeletDir>/plugins_registry/<driver>-reg.sock`. */
export function registrationSocketPath(kubeletDir: string, driver: string): string {
  return join(kubeletDir, "plugins_registry", `${driver}-reg.sock`);
}

/** An answer other than OK, with the gRPC status code the kubelet sees. */
class RpcError extends Error {
  readonly code: status;
  constructor(code: status, message: string) {
    super(message);
    this.code = code;
  }
}

interface UnpublishRequest {
  volume_id?: string;
  target_path?: string;
}

export class CsiNodePlugin implements Runnable {
  readonly name = "csi-node";
  readonly #nodeName: string;
  readonly #store: string;
  readonly #kubeletDir: string;
  readonly #driver: string;
  readonly #log: Logger;
  readonly #mounter: Mounter;
  readonly #shutdownTimeoutMs: number;
  /** The call in progress per target path: publish and unpublish of one target never overlap. */
  readonly #busy = new Map<string, Promise<unknown>>();
  readonly #listening: Promise<void>;
  #markListening!: () => void;

  constructor(opts: CsiNodePluginOptions) {
    this.#nodeName = opts.nodeName;
    this.#store = resolve(opts.store ?? STORE_ROOT);
    this.#kubeletDir = resolve(opts.kubeletDir ?? KUBELET_DIR);
    this.#driver = opts.driverName ?? CSI_DRIVER;
    this.#log = opts.log ?? discardLogger;
    this.#mounter = opts.mounter ?? new ExecMounter();
    this.#shutdownTimeoutMs = opts.shutdownTimeoutMs ?? 5000;
    this.#listening = new Promise((r) => (this.#markListening = r));
  }

  get csiSocket(): string {
    return csiSocketPath(this.#kubeletDir, this.#driver);
  }

  get registrationSocket(): string {
    return registrationSocketPath(this.#kubeletDir, this.#driver);
  }

  /** Resolves once both sockets accept calls. */
  listening(): Promise<void> {
    return this.#listening;
  }

  async start(signal: AbortSignal): Promise<void> {
    const services = csiServices();
    const csi = new Server();
    csi.addService(services.Identity.service, this.#identity());
    csi.addService(services.Node.service, this.#node());
    const registration = new Server();
    registration.addService(services.Registration.service, this.#registration());
    try {
      // The CSI endpoint first: the kubelet connects to it as soon as it sees the registration socket.
      await bind(csi, this.csiSocket);
      await bind(registration, this.registrationSocket);
      this.#log.info("csi plugin listening", { driver: this.#driver, csiSocket: this.csiSocket, registrationSocket: this.registrationSocket, store: this.#store });
      this.#markListening();
      await aborted(signal);
      this.#log.info("csi plugin stopping");
    } finally {
      // The registration socket first: the kubelet drops the plugin when it goes away.
      await shutdown(registration, this.#shutdownTimeoutMs);
      await rm(this.registrationSocket, { force: true }).catch(() => {});
      await shutdown(csi, this.#shutdownTimeoutMs);
      await rm(this.csiSocket, { force: true }).catch(() => {});
    }
  }

  #identity(): UntypedServiceImplementation {
    return {
      GetPluginInfo: unary(() => ({ name: this.#driver, vendor_version: pkg.version, manifest: {} })),
      GetPluginCapabilities: unary(() => ({ capabilities: [] })),
      Probe: unary(() => ({ ready: { value: true } })),
    };
  }

  /** NodeStageVolume, NodeGetVolumeStats, NodeExpandVolume: left out, so grpc-js answers UNIMPLEMENTED. */
  #node(): UntypedServiceImplementation {
    return {
      NodeGetInfo: unary(() => ({ node_id: this.#nodeName, max_volumes_per_node: 0 })),
      NodeGetCapabilities: unary(() => ({ capabilities: [] })),
      NodePublishVolume: unary((req: PublishRequest) => this.#publish(req)),
      NodeUnpublishVolume: unary((req: UnpublishRequest) => this.#unpublish(req)),
    };
  }

  #registration(): UntypedServiceImplementation {
    return {
      GetInfo: unary(() => ({ type: "CSIPlugin", name: this.#driver, endpoint: this.csiSocket, supported_versions: CSI_SUPPORTED_VERSIONS })),
      NotifyRegistrationStatus: unary((req: { plugin_registered?: boolean; error?: string }) => {
        if (req.plugin_registered) this.#log.info("registered with the kubelet", { driver: this.#driver });
        else this.#log.error("the kubelet refused to register the plugin", { driver: this.#driver, error: req.error ?? "" });
        return {};
      }),
    };
  }

  async #publish(req: PublishRequest): Promise<object> {
    const plan = planPublish(req, { store: this.#store, kubeletDir: this.#kubeletDir });
    if (isRefusal(plan)) {
      const ctx = req.volume_context ?? {};
      this.#log.warn("volume publish refused", { reason: plan.refused, namespace: ctx[POD_NAMESPACE], pod: ctx[POD_NAME], target: req.target_path, message: plan.message });
      throw new RpcError(status.INVALID_ARGUMENT, plan.message);
    }
    return this.#oneAtATime(plan.target, () => this.#bind(plan));
  }

  async #bind(plan: PublishPlan): Promise<object> {
    const fields = { namespace: plan.namespace, pod: plan.podName, view: plan.view, target: plan.target };
    await this.#insidePods(plan.target, "publish");
    await mkdir(plan.target, { recursive: true, mode: 0o750 });
    await this.#insidePods(plan.target, "publish");
    if (await this.#mounter.isMountPoint(plan.target)) {
      this.#log.info("volume already published", fields);
      return {};
    }
    // Publishing never waits for an archive: a node that holds nothing of the scope yet mounts an empty view.
    await mkdir(plan.source, { recursive: true, mode: 0o755 });
    await this.#mounter.bindReadOnly(plan.source, plan.target);
    this.#log.info("volume published", fields);
    return {};
  }

  async #unpublish(req: UnpublishRequest): Promise<object> {
    const refuse = (message: string) => {
      this.#log.warn("volume unpublish refused", { target: req.target_path, message });
      return new RpcError(status.INVALID_ARGUMENT, message);
    };
    if (!req.volume_id) throw refuse("volume_id is empty; the kubelet always sets one");
    const target = checkTarget(req.target_path, this.#kubeletDir);
    if (isRefusal(target)) throw refuse(target.message);
    const path = req.target_path!;
    return this.#oneAtATime(path, async () => {
      if (await this.#insidePods(path, "unpublish")) {
        for (let i = 0; await this.#mounter.isMountPoint(path); i++) {
          if (i === 8) throw new RpcError(status.INTERNAL, `${path} is still a mount point after ${i} unmounts`);
          await this.#mounter.unmount(path);
        }
        await rmdir(path).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== "ENOENT") throw new RpcError(status.INTERNAL, `cannot remove the target directory ${path}: ${err.message}`);
        });
      }
      this.#log.info("volume unpublished", { podUid: target.podDir, volume: req.volume_id, target: path });
      return {};
    });
  }

  /**
   * Refuses a target whose nearest existing ancestor (or itself) resolves, through symbolic
   * links, to outside the kubelet's pods directory. True when the target itself exists.
   */
  async #insidePods(target: string, op: string): Promise<boolean> {
    const pods = await realpath(podsDir(this.#kubeletDir)).catch(() => podsDir(this.#kubeletDir));
    for (let p = target; ; p = dirname(p)) {
      const real = await realpath(p).catch((err: NodeJS.ErrnoException) => {
        if (err.code === "ENOENT" && p !== dirname(p)) return undefined;
        throw err;
      });
      if (real === undefined) continue;
      if (real !== pods && !real.startsWith(pods + "/")) {
        const message = `target_path ${target} resolves to ${real}, outside ${pods}/ (a symbolic link on the way): the plugin mounts only inside the kubelet's pods directory`;
        this.#log.warn(`volume ${op} refused`, { target, resolved: real });
        throw new RpcError(status.INVALID_ARGUMENT, message);
      }
      return p === target;
    }
  }

  async #oneAtATime<T>(target: string, fn: () => Promise<T>): Promise<T> {
    const before = this.#busy.get(target) ?? Promise.resolve();
    const run = before.then(fn, fn);
    const settled = run.catch(() => {});
    this.#busy.set(target, settled);
    try {
      return await run;
    } finally {
      if (this.#busy.get(target) === settled) this.#busy.delete(target);
    }
  }
}

/** A unary handler from a function; a thrown RpcError is its status, anything else INTERNAL. */
function unary<Req, Res>(fn: (req: Req) => Res | Promise<Res>): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    Promise.resolve()
      .then(() => fn(call.request))
      .then(
        (res) => callback(null, res),
        (err: unknown) => {
          const code = err instanceof RpcError ? err.code : status.INTERNAL;
          callback({ code, details: err instanceof Error ? err.message : String(err) });
        },
      );
  };
}

/** Listens on a Unix socket, replacing a socket file a previous run left. */
async function bind(server: Server, path: string): Promise<void> {
  try {
    await mkdir(dirname(path), { recursive: true });
    await rm(path, { force: true });
    await new Promise<void>((resolve, reject) => server.bindAsync(`unix://${path}`, ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
  } catch (err) {
    throw new ClasscacheError("input", `cannot listen on ${path}`, { cause: err, hint: "the plugin needs the kubelet's directory (--kubelet-dir) mounted read-write at the same path as on the host" });
  }
}

/** Lets calls in flight finish for `ms`, then closes what is left. */
async function shutdown(server: Server, ms: number): Promise<void> {
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, ms);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
