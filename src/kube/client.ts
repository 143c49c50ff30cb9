/**
 * The Kubernetes API client: the only module that imports @kubernetes/client-node.
 *
 * The library is used for what it is good at — reading kubeconfig files and the in-cluster
 * service account, and every way of authenticating (tokens, client certificates, exec plugins,
 * OIDC) — through `KubeConfig.applyToHTTPSOptions`. The requests themselves are plain node:https,
 * because what a controller needs is awkward through the library's HTTP layer:
 *  - its Watch aborts a stream after 30 s without data, and an idle watch gets its first
 *    bookmark only after about a minute; on an HTTP error it keeps the status text, not the
 *    server's message;
 *  - its generated patch methods pick the Content-Type themselves (JSON patch), so server-side
 *    apply needs a middleware; the generic KubernetesObjectApi has no subresources (status) and no
 *    resourceVersion on list;
 *  - Lease and Event times are MicroTime: the server accepts exactly six fractional digits, so a
 *    plain Date (three digits) is rejected with 400; the library needs its V1MicroTime subclass.
 * Every verb here is generic over a ResourceType, so CRDs, Deployments and Pods work alike.
 */
import http from "node:http";
import https from "node:https";
import { KubeConfig } from "@kubernetes/client-node";
import { ApiError, isGone, isNotFound } from "./errors.ts";
import { apiVersionOf, Events, Leases, resourcePath, resourceType, type ResourceType } from "./resource.ts";
import type { Event, KubeList, KubeObject, Lease, Status, WatchEvent } from "./types.ts";

export interface KubeClientOptions {
  /** A kubeconfig file. Without it the in-cluster service-account configuration is used. */
  kubeconfigPath?: string;
  /** A kubeconfig context other than the current one. */
  context?: string;
  /** Send requests to this URL instead of the kubeconfig's server (same CA and credentials). */
  server?: string;
  /** Time limit of every request that is not a watch, in ms (default 30 s). */
  requestTimeoutMs?: number;
  userAgent?: string;
  /** Act as another user (needs the `impersonate` verb): Impersonate-User / Impersonate-Group. */
  impersonate?: { user: string; groups?: string[] };
}

export interface RequestOptions {
  signal?: AbortSignal;
}

export interface ObjectOptions extends RequestOptions {
  /** For namespaced types; defaults to the object's namespace, then the kubeconfig's namespace. */
  namespace?: string;
}

export interface WriteOptions extends ObjectOptions {
  fieldManager?: string;
  dryRun?: boolean;
}

export interface ApplyOptions extends ObjectOptions {
  fieldManager: string;
  /** Take over fields other managers own (default true, as a controller should). */
  force?: boolean;
  dryRun?: boolean;
  /** Unknown or duplicate fields: "Strict" fails the request, "Warn" (the server's default) only warns. */
  fieldValidation?: "Strict" | "Warn" | "Ignore";
}

export interface ListOptions extends RequestOptions {
  /** Omit for all namespaces. */
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** Page size; every page is fetched and the items are concatenated (default 500). */
  pageSize?: number;
}

export interface WatchOptions extends RequestOptions {
  /** Omit for all namespaces. */
  namespace?: string;
  /** Where to start. Omitted: "now", after synthetic ADDED events for everything that exists. */
  resourceVersion?: string;
  allowWatchBookmarks?: boolean;
  /** The server ends the watch after this many seconds. */
  timeoutSeconds?: number;
  labelSelector?: string;
  fieldSelector?: string;
}

export interface DeleteOptions extends ObjectOptions {
  propagationPolicy?: "Foreground" | "Background" | "Orphan";
  gracePeriodSeconds?: number;
  preconditions?: { uid?: string; resourceVersion?: string };
}

export type PatchType = "merge" | "json" | "strategic";
const PATCH_CONTENT_TYPES: Record<PatchType, string> = {
  merge: "application/merge-patch+json",
  json: "application/json-patch+json",
  strategic: "application/strategic-merge-patch+json",
};
const APPLY_CONTENT_TYPE = "application/apply-patch+yaml";
const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_PAGE_SIZE = 500;
/** A watch still open this long after its timeoutSeconds is on a dead connection. */
const WATCH_GRACE_MS = 30_000;

type Query = Record<string, string | number | boolean | undefined>;

interface Call {
  method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE";
  path: string;
  query?: Query;
  body?: unknown;
  contentType?: string;
  signal?: AbortSignal;
}

export class KubeClient {
  /** Base URL of the API server. */
  readonly server: string;
  /** The namespace of the kubeconfig context (or of the service account in a cluster). */
  readonly namespace: string;
  readonly #kc: KubeConfig;
  readonly #opts: KubeClientOptions;

  private constructor(kc: KubeConfig, opts: KubeClientOptions) {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error("the kubeconfig has no current cluster");
    this.#kc = kc;
    this.#opts = opts;
    this.server = (opts.server ?? cluster.server).replace(/\/+$/, "");
    this.namespace = kc.getContextObject(kc.getCurrentContext())?.namespace?.trim() || "default";
  }

  /** From a kubeconfig file when `kubeconfigPath` is given, else from the in-cluster service account. */
  static load(opts: KubeClientOptions = {}): KubeClient {
    const kc = new KubeConfig();
    if (opts.kubeconfigPath !== undefined) kc.loadFromFile(opts.kubeconfigPath);
    else kc.loadFromCluster();
    if (opts.context !== undefined) kc.setCurrentContext(opts.context);
    return new KubeClient(kc, opts);
  }

  /** The same connection as someone else (a test of RBAC, or of what a service account may do). */
  impersonating(user: string, groups?: string[]): KubeClient {
    return new KubeClient(this.#kc, { ...this.#opts, impersonate: groups ? { user, groups } : { user } });
  }

  async get<T extends KubeObject>(rt: ResourceType, name: string, opts: ObjectOptions = {}): Promise<T> {
    const path = resourcePath(rt, this.#ns(rt, opts.namespace), name);
    return withTypeMeta(rt, (await this.#call({ method: "GET", path, ...signalOf(opts) })) as T);
  }

  /** Every page of a list; `metadata.resourceVersion` is that of the snapshot all pages came from. */
  async list<T extends KubeObject>(rt: ResourceType, opts: ListOptions = {}): Promise<KubeList<T>> {
    const path = resourcePath(rt, opts.namespace);
    const query: Query = { labelSelector: opts.labelSelector, fieldSelector: opts.fieldSelector };
    const items: T[] = [];
    let cont: string | undefined;
    for (;;) {
      let page: KubeList<T>;
      try {
        page = (await this.#call({
          method: "GET",
          path,
          query: { ...query, limit: opts.pageSize ?? DEFAULT_PAGE_SIZE, continue: cont },
          ...signalOf(opts),
        })) as KubeList<T>;
      } catch (err) {
        // The continue token outlived etcd's compaction: start over in one request, as client-go's pager does.
        if (cont === undefined || !isGone(err)) throw err;
        const all = (await this.#call({ method: "GET", path, query, ...signalOf(opts) })) as KubeList<T>;
        return { ...all, items: all.items.map((o) => withTypeMeta(rt, o)) };
      }
      items.push(...page.items.map((o) => withTypeMeta(rt, o)));
      cont = page.metadata.continue || undefined;
      if (cont === undefined) return { ...page, metadata: { resourceVersion: page.metadata.resourceVersion }, items };
    }
  }

  async create<T extends KubeObject>(rt: ResourceType, obj: T, opts: WriteOptions = {}): Promise<T> {
    const path = resourcePath(rt, this.#ns(rt, opts.namespace, obj));
    return (await this.#call({ method: "POST", path, query: writeQuery(opts), body: withTypeMeta(rt, obj), ...signalOf(opts) })) as T;
  }

  /** PUT. With `metadata.resourceVersion` set, a concurrent change makes it fail with 409. */
  async update<T extends KubeObject>(rt: ResourceType, obj: T, opts: WriteOptions = {}): Promise<T> {
    return this.#put(rt, obj, opts, undefined);
  }

  async updateStatus<T extends KubeObject>(rt: ResourceType, obj: T, opts: WriteOptions = {}): Promise<T> {
    return this.#put(rt, obj, opts, "status");
  }

  async patch<T extends KubeObject>(
    rt: ResourceType,
    name: string,
    patch: unknown,
    opts: WriteOptions & { type: PatchType; subresource?: string },
  ): Promise<T> {
    const path = resourcePath(rt, this.#ns(rt, opts.namespace), name, opts.subresource);
    const call: Call = { method: "PATCH", path, query: writeQuery(opts), body: patch, contentType: PATCH_CONTENT_TYPES[opts.type] };
    return (await this.#call({ ...call, ...signalOf(opts) })) as T;
  }

  /** Server-side apply: the object states what this field manager wants; the server merges and owns. */
  async apply<T extends KubeObject>(rt: ResourceType, obj: T, opts: ApplyOptions): Promise<T> {
    return this.#apply(rt, obj, opts, undefined);
  }

  /** Server-side apply of the status subresource (only `status` of `obj` counts). */
  async applyStatus<T extends KubeObject>(rt: ResourceType, obj: T, opts: ApplyOptions): Promise<T> {
    return this.#apply(rt, obj, opts, "status");
  }

  async delete(rt: ResourceType, name: string, opts: DeleteOptions = {}): Promise<void> {
    const path = resourcePath(rt, this.#ns(rt, opts.namespace), name);
    const body = {
      apiVersion: "v1",
      kind: "DeleteOptions",
      propagationPolicy: opts.propagationPolicy,
      gracePeriodSeconds: opts.gracePeriodSeconds,
      preconditions: opts.preconditions,
    };
    await this.#call({ method: "DELETE", path, body, ...signalOf(opts) });
  }

  /** The resource of `kind` in `apiVersion`, from the server's discovery document; undefined if it serves none. */
  async discover(apiVersion: string, kind: string, opts: RequestOptions = {}): Promise<ResourceType | undefined> {
    const path = apiVersion.includes("/") ? `/apis/${apiVersion}` : `/api/${apiVersion}`;
    const doc = (await this.#call({ method: "GET", path, ...signalOf(opts) })) as { resources?: { name: string; kind: string; namespaced: boolean }[] };
    const r = doc.resources?.find((x) => x.kind === kind && !x.name.includes("/"));
    return r ? resourceType(apiVersion, kind, r.name, r.namespaced) : undefined;
  }

  /**
   * A watch stream. It ends when the server closes it (timeoutSeconds) and throws an ApiError for an
   * ERROR event — the server reports an expired resourceVersion (410) that way, inside an HTTP 200.
   * Aborting `signal` ends it quietly; so does leaving the for-await loop.
   */
  async *watch<T extends KubeObject>(rt: ResourceType, opts: WatchOptions = {}): AsyncGenerator<WatchEvent<T>, void, undefined> {
    const path = resourcePath(rt, opts.namespace);
    const request = `WATCH ${path}`;
    const ctl = new AbortController();
    const onAbort = (): void => ctl.abort(opts.signal?.reason);
    if (opts.signal?.aborted) return;
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    const deadline =
      opts.timeoutSeconds === undefined
        ? undefined
        : setTimeout(
            () => ctl.abort(new Error(`${request}: still open ${WATCH_GRACE_MS} ms after its timeout; the connection is dead`)),
            opts.timeoutSeconds * 1000 + WATCH_GRACE_MS,
          );
    const query: Query = {
      watch: "true",
      resourceVersion: opts.resourceVersion,
      allowWatchBookmarks: opts.allowWatchBookmarks,
      timeoutSeconds: opts.timeoutSeconds,
      labelSelector: opts.labelSelector,
      fieldSelector: opts.fieldSelector,
    };
    let res: http.IncomingMessage | undefined;
    try {
      res = await this.#send({ method: "GET", path, query }, ctl.signal);
      if (res.statusCode !== 200) throw ApiError.fromResponse(res.statusCode ?? 0, await readBody(res), request);
      res.setEncoding("utf8");
      let buffered = "";
      for await (const chunk of res as AsyncIterable<string>) {
        buffered += chunk;
        for (let nl = buffered.indexOf("\n"); nl >= 0; nl = buffered.indexOf("\n")) {
          const event = parseWatchLine<T>(rt, buffered.slice(0, nl), request);
          buffered = buffered.slice(nl + 1);
          if (event) yield event;
        }
      }
    } catch (err) {
      if (opts.signal?.aborted) return;
      throw ctl.signal.aborted ? ctl.signal.reason : err;
    } finally {
      clearTimeout(deadline);
      opts.signal?.removeEventListener("abort", onAbort);
      res?.destroy();
    }
  }

  /** The Lease, or undefined when there is none. */
  async getLease(namespace: string, name: string, opts: RequestOptions = {}): Promise<Lease | undefined> {
    try {
      return await this.get<Lease>(Leases, name, { namespace, ...signalOf(opts) });
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** Fails with 409 (AlreadyExists) when another candidate created it first. */
  createLease(lease: Lease, opts: RequestOptions = {}): Promise<Lease> {
    return this.create(Leases, lease, signalOf(opts));
  }

  /** Fails with 409 (Conflict) when the Lease changed since `lease.metadata.resourceVersion`. */
  updateLease(lease: Lease, opts: RequestOptions = {}): Promise<Lease> {
    return this.update(Leases, lease, signalOf(opts));
  }

  createEvent(event: Event, opts: RequestOptions = {}): Promise<Event> {
    return this.create(Events, event, signalOf(opts));
  }

  #ns(rt: ResourceType, explicit: string | undefined, obj?: KubeObject): string | undefined {
    if (!rt.namespaced) return undefined;
    return explicit ?? obj?.metadata.namespace ?? this.namespace;
  }

  async #put<T extends KubeObject>(rt: ResourceType, obj: T, opts: WriteOptions, subresource: string | undefined): Promise<T> {
    const name = nameOf(obj);
    const path = resourcePath(rt, this.#ns(rt, opts.namespace, obj), name, subresource);
    return (await this.#call({ method: "PUT", path, query: writeQuery(opts), body: withTypeMeta(rt, obj), ...signalOf(opts) })) as T;
  }

  async #apply<T extends KubeObject>(rt: ResourceType, obj: T, opts: ApplyOptions, subresource: string | undefined): Promise<T> {
    const path = resourcePath(rt, this.#ns(rt, opts.namespace, obj), nameOf(obj), subresource);
    const query: Query = {
      fieldManager: opts.fieldManager,
      force: opts.force ?? true,
      dryRun: opts.dryRun ? "All" : undefined,
      fieldValidation: opts.fieldValidation,
    };
    // JSON is YAML, so the apply-patch+yaml content type takes it as it is.
    const call: Call = { method: "PATCH", path, query, body: withTypeMeta(rt, obj), contentType: APPLY_CONTENT_TYPE };
    return (await this.#call({ ...call, ...signalOf(opts) })) as T;
  }

  /** One request with a time limit; the parsed body, or an ApiError. */
  async #call(call: Call): Promise<unknown> {
    const limitMs = this.#opts.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    const timeout = AbortSignal.timeout(limitMs);
    const signal = call.signal ? AbortSignal.any([call.signal, timeout]) : timeout;
    const request = `${call.method} ${call.path}`;
    try {
      const res = await this.#send(call, signal);
      const text = await readBody(res);
      const status = res.statusCode ?? 0;
      if (status < 200 || status >= 300) throw ApiError.fromResponse(status, text, request);
      return text === "" ? undefined : (JSON.parse(text) as unknown);
    } catch (err) {
      if (timeout.aborted && !call.signal?.aborted) throw new Error(`${request}: no answer within ${limitMs} ms`, { cause: err });
      throw err;
    }
  }

  async #send(call: Call, signal: AbortSignal): Promise<http.IncomingMessage> {
    const url = new URL(this.server + call.path);
    for (const [k, v] of Object.entries(call.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const options: https.RequestOptions = {};
    await this.#kc.applyToHTTPSOptions(options); // CA, client cert, Authorization, the library's cached agent
    const headers: http.OutgoingHttpHeaders = {
      ...(options.headers as http.OutgoingHttpHeaders | undefined),
      Accept: "application/json",
      "User-Agent": this.#opts.userAgent ?? "classcache",
    };
    const imp = this.#opts.impersonate;
    if (imp) {
      headers["Impersonate-User"] = imp.user;
      if (imp.groups?.length) headers["Impersonate-Group"] = imp.groups;
    }
    const body = call.body === undefined ? undefined : JSON.stringify(call.body);
    if (body !== undefined) {
      headers["Content-Type"] = call.contentType ?? "application/json";
      headers["Content-Length"] = Buffer.byteLength(body);
    }
    const plain = url.protocol === "http:";
    if (plain && options.agent instanceof https.Agent) delete options.agent;
    return new Promise((resolve, reject) => {
      const req = (plain ? http : https).request(url, { ...options, method: call.method, headers, signal }, resolve);
      req.on("error", reject);
      req.end(body);
    });
  }
}

function signalOf(opts: RequestOptions): { signal?: AbortSignal } {
  return opts.signal ? { signal: opts.signal } : {};
}

function writeQuery(opts: WriteOptions): Query {
  return { fieldManager: opts.fieldManager, dryRun: opts.dryRun ? "All" : undefined };
}

function nameOf(obj: KubeObject): string {
  const name = obj.metadata.name;
  if (!name) throw new Error("the object has no metadata.name");
  return name;
}

/** Objects in list responses of built-in types carry no apiVersion/kind; fill them in. */
function withTypeMeta<T extends KubeObject>(rt: ResourceType, obj: T): T {
  if (obj.apiVersion && obj.kind) return obj;
  return { ...obj, apiVersion: obj.apiVersion ?? apiVersionOf(rt), kind: obj.kind ?? rt.kind };
}

async function readBody(res: http.IncomingMessage): Promise<string> {
  res.setEncoding("utf8");
  let text = "";
  for await (const chunk of res as AsyncIterable<string>) text += chunk;
  return text;
}

function parseWatchLine<T extends KubeObject>(rt: ResourceType, line: string, request: string): WatchEvent<T> | undefined {
  if (line.trim() === "") return undefined;
  const raw = JSON.parse(line) as { type?: string; object?: unknown };
  switch (raw.type) {
    case "ADDED":
    case "MODIFIED":
    case "DELETED":
      return { type: raw.type, object: withTypeMeta(rt, raw.object as T) };
    case "BOOKMARK":
      return { type: "BOOKMARK", resourceVersion: (raw.object as KubeObject).metadata.resourceVersion ?? "" };
    case "ERROR":
      throw ApiError.fromStatus(raw.object as Status, request);
    default:
      return undefined;
  }
}
