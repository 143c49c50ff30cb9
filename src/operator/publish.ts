/**
 * Publishing a build: in a cluster the operator is the only signer of manifests and ref
 * bindings. A build Job offers its build through its node's agent — the manifest signed with
 * the build's one-time key, next to the operator's grant for the build's scope and ref. The
 * agent checks the bytes and leaves the offer in the directory; the operator judges the offer
 * against the ClassCache it granted it for, admits the manifest (its key recomputed, its
 * runtime derived: archive/admit.ts) and signs the manifest and the binding. A node, rooted or
 * not, holds no key that signs for anyone; whoever can write to the directory cannot forge an
 * offer (no build key) or a statement (no operator key).
 *
 * Gather (readOffer), decide (judgeOffer: pure), act (takeOffer); publishOffer does all three.
 */
import { admitManifest } from "../archive/admit.ts";
import type { Manifest } from "../archive/manifest.ts";
import { openBinding, openBuild, openEnvelope, openGrant, SignatureError, signBinding, signedBy, signManifest, type Signer, type TrustStore } from "../archive/signing.ts";
import { offerName } from "../directory/common.ts";
import type { Directory } from "../directory/directory.ts";

/** An offer as the directory holds it: the grant (a token) and the build's signed manifest. */
export interface Offer {
  grant: string;
  build: string;
  /** The node whose agent received the upload (information: nothing is decided by it). */
  node: string;
}

/** What the operator expects of a build of one ClassCache's ref. */
export interface Expectation {
  scope: string;
  ref: string;
  arch: string;
  /** The ClassCache's UID. */
  owner: string;
  trust: TrustStore;
}

export type Verdict = { ok: true; manifest: Manifest } | { ok: false; reason: string };

/** Is `text` a build of what `e` expects? Pure: no I/O, no clock. */
export function judgeOffer(text: string, e: Expectation): Verdict {
  let offer: Partial<Offer>;
  try {
    offer = JSON.parse(text) as Partial<Offer>;
  } catch {
    return { ok: false, reason: "the offer is not JSON" };
  }
  if (typeof offer?.grant !== "string" || typeof offer.build !== "string") return { ok: false, reason: "the offer is malformed" };
  try {
    const grant = openGrant(offer.grant, e.trust, e.ref);
    if (grant.scope !== e.scope) return { ok: false, reason: `the offer's grant is for scope ${JSON.stringify(grant.scope)}, not ${JSON.stringify(e.scope)}` };
    if (grant.owner !== e.owner) return { ok: false, reason: `the offer's grant was made for ClassCache ${grant.classCache} (UID ${grant.owner}), not this one` };
    const built = openBuild(offer.build, grant);
    if (built.jvm.arch !== e.arch) return { ok: false, reason: `the offered build is for ${built.jvm.arch}, not ${e.arch}` };
    const sizes = new Map([[built.archive.sha256, built.archive.size], ...built.layout.files.map((f) => [f.sha256, f.size] as const)]);
    return { ok: true, manifest: admitManifest(built, { scope: e.scope, blobSize: (sha) => sizes.get(sha) }) };
  } catch (err) {
    if (err instanceof SignatureError || err instanceof Error) return { ok: false, reason: err.message };
    throw err;
  }
}

export type Published = { published: true; key: string } | { published: false; reason: string };

/** The offer waiting in the directory for `ref` on `arch`, if there is one (gather). */
export async function readOffer(directory: Directory, ref: string, arch: string): Promise<string | undefined> {
  return directory.binding(offerName(ref, arch));
}

/**
 * Acts on a judged offer for `e`: a refused one is removed; an accepted one has its manifest
 * signed and published (first publish of a key wins: an equal key built elsewhere is the same
 * archive), the ref bound to it for `e.owner` (replacing a binding of another owner), and the
 * offer removed.
 */
export async function takeOffer(directory: Directory, signer: Signer, e: Expectation, verdict: Verdict, now: number): Promise<Published> {
  const name = offerName(e.ref, e.arch);
  if (!verdict.ok) {
    await directory.unbind(name);
    return { published: false, reason: verdict.reason };
  }
  const m = verdict.manifest;
  await directory.publish(m.key, signManifest(m, signer));
  const bindingName = `${e.ref}.${e.arch}`;
  const current = await directory.binding(bindingName);
  // Another owner's binding, or one that does not verify, is replaced.
  if (current !== undefined && boundTo(current, e.trust, e.ref, e.arch) !== e.owner) await directory.unbind(bindingName);
  await directory.bind(bindingName, signBinding({ scope: e.scope, ref: e.ref, arch: e.arch, key: m.key, owner: e.owner, issuedAt: now }, signer));
  await directory.unbind(name);
  await directory.emit({ type: "published", key: m.key, node: "operator" });
  return { published: true, key: m.key };
}

/** The owner of a binding that verifies, else undefined. */
export function boundTo(text: string, trust: TrustStore, ref: string, arch: string): string | undefined {
  try {
    return openBinding(text, trust, ref, arch).owner;
  } catch {
    return undefined;
  }
}

/** Reads, judges and takes the offer for `e` in one go. Undefined when there is no offer. */
export async function publishOffer(directory: Directory, signer: Signer, e: Expectation, now: number): Promise<Published | undefined> {
  const text = await readOffer(directory, e.ref, e.arch);
  if (text === undefined) return undefined;
  return takeOffer(directory, signer, e, judgeOffer(text, e), now);
}

/**
 * Signs a ref's binding and its key's manifest again with `signer` where an older (still
 * trusted) key signed them: a rotation of the signing key (keys.ts) without rebuilding anything.
 * The binding keeps its time, so no node takes it for a replay; the manifest is replaced by a
 * compare-and-set, so there is no moment without one. Returns whether anything was signed again.
 */
export async function signAgain(directory: Directory, signer: Signer, trust: TrustStore, ref: string, arch: string): Promise<boolean> {
  const name = `${ref}.${arch}`;
  const text = await directory.binding(name);
  if (text === undefined) return false;
  const binding = openBinding(text, trust, ref, arch);
  let changed = false;
  if (signedBy(text) !== signer.keyId) {
    await directory.unbind(name);
    await directory.bind(name, signBinding(binding, signer));
    changed = true;
  }
  const envelope = await directory.manifest(binding.key);
  if (envelope !== undefined && signedBy(envelope) !== signer.keyId) {
    changed = (await directory.replaceManifest(binding.key, envelope, signManifest(openEnvelope(envelope, trust, binding.key), signer))) || changed;
  }
  return changed;
}
