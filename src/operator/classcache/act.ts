/**
 * Act: the writes a decision asks for, made in order — through the one apply helper for
 * server-side applies, JSON patches where apply cannot do the job, and the directory's own
 * operations for what the operator signs. Nothing here decides; it reports what failed.
 */
import { generateBuildKey, signGrant } from "../../archive/signing.ts";
import type { KubeClient } from "../../kube/client.ts";
import type { EventRecorder } from "../../kube/events.ts";
import { Jobs, Secrets } from "../../kube/resource.ts";
import type { KubeObject } from "../../kube/types.ts";
import type { Logger } from "../../runtime/log.ts";
import { ClassCaches, type ClassCache } from "../api/v1.ts";
import { apply } from "../apply.ts";
import { FIELD_MANAGER, PATCHING_LABEL } from "../constants.ts";
import { buildTokenSecret } from "../objects/buildjob.ts";
import { classCacheOwner } from "../objects/meta.ts";
import { signAgain, takeOffer } from "../publish.ts";
import type { Action, GrantRequest } from "./decide.ts";
import { appliedKey, type Handles, type Memory } from "./observe.ts";
import { ARCHS } from "./policies.ts";
import { pointer, WORKLOAD_TYPES, type Workload, type WorkloadRef } from "./workload.ts";

export interface ActContext {
  client: KubeClient;
  events: EventRecorder;
  log: Logger;
  /** The ClassCache the pass is about (undefined when it is gone: then there is nothing to do). */
  classCache: ClassCache | undefined;
  handles: Handles;
  memory: Memory;
  /** Wall-clock time: grants and bindings carry it. */
  now: () => number;
  signal: AbortSignal;
}

/**
 * Makes the writes in order. A failed write throws (the pass is retried), except the template's
 * patch in Owned mode: its error ends the writes and is returned, for the status to say.
 */
export async function act(actions: Action[], ctx: ActContext): Promise<{ patchFailure?: string }> {
  for (const a of actions) {
    if (a.kind !== "patchWorkload") {
      await perform(a, ctx);
      continue;
    }
    try {
      await patchWorkload(a, ctx);
    } catch (err) {
      return { patchFailure: err instanceof Error ? err.message : String(err) };
    }
  }
  return {};
}

async function perform(a: Exclude<Action, { kind: "patchWorkload" }>, ctx: ActContext): Promise<void> {
  const { client, signal } = ctx;
  const cc = need(ctx.classCache, "the ClassCache");
  const ns = cc.metadata.namespace!;
  switch (a.kind) {
    case "addFinalizer":
    case "removeFinalizer":
      // The whole list in a merge patch guarded by the resourceVersion: a concurrent change to the
      // finalizers makes it fail (and the pass is retried) instead of being overwritten.
      await client.patch(ClassCaches, cc.metadata.name!, { metadata: { finalizers: a.finalizers, resourceVersion: cc.metadata.resourceVersion } }, { type: "merge", namespace: ns, signal });
      return;
    case "takeOffer":
      await takeOffer(need(ctx.handles.directory, "the directory"), need(ctx.handles.signer, "the signing key"), { scope: a.scope, ref: a.ref, arch: a.arch, owner: a.owner, trust: need(ctx.handles.trust, "the trusted keys") }, a.verdict, ctx.now());
      return;
    case "signAgain":
      if (await signAgain(need(ctx.handles.directory, "the directory"), need(ctx.handles.signer, "the signing key"), need(ctx.handles.trust, "the trusted keys"), a.ref, a.arch)) await record(ctx, cc, a.event);
      return;
    case "createBuildJob":
      // The Secret first: the Job's pod mounts it.
      await grantBuild(a.grant, cc, ctx);
      await apply(client, Jobs, a.job, { namespace: ns, signal });
      return;
    case "ensureGrantSecret":
      await grantBuild(a.grant, cc, ctx);
      return;
    case "unpatchWorkload": {
      const rt = WORKLOAD_TYPES[a.workload.kind];
      // Apply cannot put back the values the patch replaced: a JSON patch restores the template,
      // then an empty apply releases whatever this manager still owns (nothing of ours is left).
      await client.patch<Workload>(rt, a.workload.name, a.restore, { type: "json", namespace: a.workload.namespace, fieldManager: FIELD_MANAGER, signal });
      await apply(client, rt, { apiVersion: "apps/v1", kind: a.workload.kind, metadata: { name: a.workload.name, namespace: a.workload.namespace } }, { namespace: a.workload.namespace, signal });
      await unmark(a.workload, ctx);
      ctx.memory.applied.delete(appliedKey(a.workload));
      return;
    }
    case "unbindRef": {
      const directory = need(ctx.handles.directory, "the directory");
      for (const arch of ARCHS) await directory.unbind(`${a.ref}.${arch}`);
      return;
    }
    case "recordEvent":
      await record(ctx, cc, a.event);
      return;
    case "log":
      ctx.log[a.level](a.message, a.fields);
      return;
    case "applyStatus":
      await apply(client, ClassCaches, { apiVersion: "classcache.dev/v1", kind: "ClassCache", metadata: { name: cc.metadata.name, namespace: ns }, status: a.status }, { namespace: ns, signal, subresource: "status" });
      return;
  }
}

/**
 * Owned mode's writes: the whole patched template first where the env is not as patched yet (a
 * JSON patch guarded by the resourceVersion: apply cannot reorder env or drop another manager's
 * valueFrom, see ownedPatch), then the apply of our fields. Remembers what it applied.
 */
async function patchWorkload(a: Extract<Action, { kind: "patchWorkload" }>, ctx: ActContext): Promise<void> {
  const rt = WORKLOAD_TYPES[a.workload.kind];
  const at = { namespace: a.workload.namespace, signal: ctx.signal };
  if (a.template) await ctx.client.patch(rt, a.workload.name, a.template, { type: "json", ...at, fieldManager: FIELD_MANAGER });
  await apply(ctx.client, rt, a.config as Workload, at);
  const done = await unmark(a.workload, ctx);
  ctx.memory.applied.set(appliedKey(a.workload), { resourceVersion: done.metadata.resourceVersion, body: JSON.stringify(a.config) });
}

/**
 * The last write of a change to a workload: the patching label goes. Every write of the change
 * carries it, because the admission policy that lets the operator write workloads only where a
 * ClassCache exists selects by it (deploy/rbac/operator-admission.yaml); a label left behind
 * would make that policy judge the owner's own writes once no ClassCache is left.
 */
async function unmark(w: WorkloadRef, ctx: ActContext): Promise<KubeObject> {
  const ops = [{ op: "remove", path: `/metadata/labels/${pointer(PATCHING_LABEL)}` }];
  return ctx.client.patch<KubeObject>(WORKLOAD_TYPES[w.kind], w.name, ops, { type: "json", namespace: w.namespace, fieldManager: FIELD_MANAGER, signal: ctx.signal });
}

/**
 * The build Job's grant and one-time build key, in a Secret of the ClassCache's next to the Job
 * (its pod waits for it): the grant is good for this scope and ref only, and for a day longer
 * than the Job may run; node agents verify it with the public key (see BuildGrant). The build
 * key's public half is in the grant; with the private half the build signs what it offers.
 * Created, never applied: the operator may create Secrets but not read them, and one that
 * exists already is the Job's.
 */
async function grantBuild(g: GrantRequest, cc: ClassCache, ctx: ActContext): Promise<void> {
  const buildKey = generateBuildKey();
  const now = ctx.now();
  const token = signGrant({ scope: g.scope, ref: g.ref, classCache: g.classCache, owner: g.owner, buildKey: buildKey.publicKey, issuedAt: now, expiresAt: now + (g.deadlineSeconds + 24 * 3600) * 1000 }, need(ctx.handles.signer, "the signing key"));
  const owner = classCacheOwner({ name: cc.metadata.name!, namespace: cc.metadata.namespace!, uid: cc.metadata.uid ?? "" });
  try {
    await ctx.client.create(Secrets, buildTokenSecret(g.namespace, g.ref, { token, key: buildKey.privatePem }, owner), { namespace: g.namespace, fieldManager: FIELD_MANAGER, signal: ctx.signal });
  } catch (err) {
    if ((err as { status?: number }).status !== 409) throw err;
  }
}

async function record(ctx: ActContext, cc: ClassCache, e: { type: "Normal" | "Warning"; reason: string; action: string; note: string }): Promise<void> {
  await ctx.events.record(cc, e.type, e.reason, e.action, e.note);
}

function need<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`${what} is not available for this write`);
  return value;
}
