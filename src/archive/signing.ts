/**
 * Signed statements: manifests, ref bindings and build grants. Each is a typed statement —
 * `{type, payload, keyId, signature}`, the Ed25519 signature over the canonical JSON of type
 * and payload together — so one kind can never pass as another. Every agent verifies the
 * signature against the keys it trusts, then the payload's shape, before anything a statement
 * names becomes visible, servable or bound. The directory only stores envelopes: whoever can
 * write to it still cannot get bytes into a workload JVM without a trusted signing key.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";
import { readFile } from "node:fs/promises";
import { ClasscacheError } from "../runtime/errors.ts";
import { canonicalJson, sha256Hex } from "../util/hash.ts";
import { KEY_PATTERN, SCOPE_PATTERN } from "./key.ts";
import { validateManifest, type Manifest } from "./manifest.ts";

export interface Signer {
  keyId: string;
  privateKey: KeyObject;
}

export function keyIdOf(publicKey: KeyObject): string {
  return sha256Hex(publicKey.export({ type: "spki", format: "der" })).slice(0, 16);
}

export function generateSigningKey(): { privatePem: string; publicPem: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return {
    privatePem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    publicPem: publicKey.export({ type: "spki", format: "pem" }).toString(),
  };
}

export function signerFromPem(pem: string): Signer {
  const privateKey = createPrivateKey(pem);
  if (privateKey.asymmetricKeyType !== "ed25519") throw new ClasscacheError("input", "the signing key is not an Ed25519 private key");
  return { keyId: keyIdOf(createPublicKey(privateKey)), privateKey };
}

/** The public keys an agent trusts, by key id. */
export type TrustStore = Map<string, KeyObject>;

/**
 * The trust store of PEM texts, each holding one public key or several (a bundle: while the
 * signing key is rotated, the old and the new one are both trusted).
 */
export function trustStoreFromPems(pems: string[]): TrustStore {
  const out: TrustStore = new Map();
  for (const text of pems) {
    const blocks = text.match(/-----BEGIN PUBLIC KEY-----[\s\S]+?-----END PUBLIC KEY-----/g);
    if (!blocks) throw new ClasscacheError("input", "a trust file holds no PEM public key");
    for (const pem of blocks) {
      const k = createPublicKey(pem);
      if (k.asymmetricKeyType !== "ed25519") throw new ClasscacheError("input", "a trusted key is not an Ed25519 public key");
      out.set(keyIdOf(k), k);
    }
  }
  return out;
}

/** The id of the key that signed a statement, read without verifying anything (undefined if none). */
export function signedBy(text: string): string | undefined {
  try {
    const keyId = (JSON.parse(text) as { keyId?: unknown }).keyId;
    return typeof keyId === "string" ? keyId : undefined;
  } catch {
    return undefined;
  }
}

export async function loadTrustStore(files: string[]): Promise<TrustStore> {
  return trustStoreFromPems(await Promise.all(files.map((f) => readFile(f, "utf8"))));
}

/** What each kind of statement is; part of what is signed. */
export const STATEMENTS = {
  manifest: "classcache.dev/manifest/v2",
  binding: "classcache.dev/binding/v2",
  grant: "classcache.dev/build-grant/v2",
  build: "classcache.dev/build/v1",
} as const;
type StatementType = (typeof STATEMENTS)[keyof typeof STATEMENTS];

function seal(type: StatementType, payload: object, signer: Signer): string {
  const signature = sign(null, Buffer.from(canonicalJson({ type, payload })), signer.privateKey).toString("base64");
  return JSON.stringify({ type, payload, keyId: signer.keyId, signature });
}

export class SignatureError extends Error {}

/**
 * The payload of a sealed statement of `type`, once its signature verifies against a trusted
 * key, checked by `shape` (which throws SignatureError on a payload of the wrong form).
 * `what` names the statement in errors.
 */
function unseal<T>(text: string, type: StatementType, trust: TrustStore, what: string, shape: (payload: Record<string, unknown>) => T): T {
  let env: Record<string, unknown>;
  try {
    env = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new SignatureError(`${what} is not JSON`);
  }
  const payload = env?.["payload"];
  if (!env || typeof env !== "object" || typeof env["signature"] !== "string" || typeof env["keyId"] !== "string" || !payload || typeof payload !== "object" || Array.isArray(payload)) {
    throw new SignatureError(`${what} is malformed`);
  }
  if (env["type"] !== type) throw new SignatureError(`${what} expected, got a statement of type ${JSON.stringify(env["type"])}`);
  const key = trust.get(env["keyId"]);
  if (!key) throw new SignatureError(`${what} signed by untrusted key ${env["keyId"]}`);
  if (!verify(null, Buffer.from(canonicalJson({ type, payload })), key, Buffer.from(env["signature"], "base64"))) throw new SignatureError(`${what} signature does not verify`);
  try {
    return shape(payload as Record<string, unknown>);
  } catch (err) {
    throw new SignatureError(`${what} is signed but malformed: ${err instanceof Error ? err.message : String(err)}`);
  }
}

export function signManifest(manifest: Manifest, signer: Signer): string {
  return seal(STATEMENTS.manifest, manifest, signer);
}

/**
 * Parses an envelope, verifies its signature and the manifest's shape; also checks that the
 * manifest is the one for `expectedKey`. Throws SignatureError on anything wrong.
 */
export function openEnvelope(text: string, trust: TrustStore, expectedKey?: string): Manifest {
  const manifest = unseal(text, STATEMENTS.manifest, trust, "manifest", (p) => validateManifest(p));
  if (expectedKey !== undefined && manifest.key !== expectedKey) throw new SignatureError(`manifest is for key ${manifest.key}, not ${expectedKey}`);
  return manifest;
}

/**
 * The manifest inside an envelope, NOT verified: for showing what a directory says (stats), never
 * for using an archive. Undefined when the text is no manifest envelope.
 */
export function peekEnvelope(text: string): Manifest | undefined {
  try {
    const env = JSON.parse(text) as { type?: unknown; payload?: Manifest };
    const m = env.payload;
    return env.type === STATEMENTS.manifest && m && typeof m === "object" && typeof m.key === "string" ? m : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A binding from a ref (the digest a ClassCache computes from a workload's build inputs, its
 * scope included) and a node arch to the key of the archive built for it. Signed like a
 * manifest: whoever can write to the directory still cannot point a workload at another
 * archive. `issuedAt` orders the bindings of one ref: an agent that has seen a binding refuses
 * an older one, so a binding cannot be replayed over a newer one.
 */
export interface RefBinding {
  /** The namespace the archive is for; "" when shared across the cluster. */
  scope: string;
  ref: string;
  arch: string;
  key: string;
  /** The UID of the ClassCache the binding was made for; "" when made outside a cluster. */
  owner: string;
  /** Epoch ms when it was signed. */
  issuedAt: number;
}

const ARCH_PATTERN = /^[a-z0-9_]{1,16}$/;

function str(p: Record<string, unknown>, field: string, pattern?: RegExp): string {
  const v = p[field];
  if (typeof v !== "string" || (pattern && !pattern.test(v))) throw new Error(`${field} is missing or malformed`);
  return v;
}

function time(p: Record<string, unknown>, field: string): number {
  const v = p[field];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw new Error(`${field} is missing or malformed`);
  return v;
}

const bindingOf = (p: Record<string, unknown>): RefBinding => ({
  scope: str(p, "scope", SCOPE_PATTERN),
  ref: str(p, "ref", KEY_PATTERN),
  arch: str(p, "arch", ARCH_PATTERN),
  key: str(p, "key", KEY_PATTERN),
  owner: str(p, "owner"),
  issuedAt: time(p, "issuedAt"),
});

export function signBinding(binding: RefBinding, signer: Signer): string {
  return seal(STATEMENTS.binding, bindingOf(binding as unknown as Record<string, unknown>), signer);
}

/** Parses and verifies a signed binding, and checks it is the one for `ref` and `arch`. */
export function openBinding(text: string, trust: TrustStore, ref: string, arch: string): RefBinding {
  const b = unseal(text, STATEMENTS.binding, trust, "ref binding", bindingOf);
  if (b.ref !== ref || b.arch !== arch) throw new SignatureError(`ref binding is for ${b.ref}/${b.arch}, not ${ref}/${arch}`);
  return b;
}

/**
 * What a ClassCache's build Job presents to its node agent to upload the build of one ref:
 * signed by the operator, verified by the agent with the public key alone (no node holds a
 * secret it could mint grants with). It binds the scope and the ref: an upload under it may
 * only offer a key of that scope, for that ref. It also names the build's own one-time public
 * key (`buildKey`, whose private half only the Job's Secret holds): the build signs what it
 * offers with it, so the operator knows an offer it reads from the directory came from that
 * build, not from whoever can write to the directory.
 */
export interface BuildGrant {
  scope: string;
  ref: string;
  /** namespace/name and UID of the ClassCache the build is for. */
  classCache: string;
  owner: string;
  /** The build's one-time Ed25519 public key, SPKI DER in base64. */
  buildKey: string;
  issuedAt: number;
  /** Epoch ms after which an agent accepts no upload under it. */
  expiresAt: number;
}

const grantOf = (p: Record<string, unknown>): BuildGrant => ({
  scope: str(p, "scope", SCOPE_PATTERN),
  ref: str(p, "ref", KEY_PATTERN),
  classCache: str(p, "classCache"),
  owner: str(p, "owner"),
  buildKey: str(p, "buildKey", /^[A-Za-z0-9+/=]{40,200}$/),
  issuedAt: time(p, "issuedAt"),
  expiresAt: time(p, "expiresAt"),
});

/** The grant as a bearer token: base64url of its envelope, so it fits an Authorization header. */
export function signGrant(grant: BuildGrant, signer: Signer): string {
  return Buffer.from(seal(STATEMENTS.grant, grantOf(grant as unknown as Record<string, unknown>), signer)).toString("base64url");
}

/** Verifies a grant token and checks it is for `ref` and, given `now`, not expired. */
export function openGrant(token: string, trust: TrustStore, ref: string, now?: number): BuildGrant {
  if (!/^[A-Za-z0-9_-]{1,8192}$/.test(token)) throw new SignatureError("build grant is malformed");
  const g = unseal(Buffer.from(token, "base64url").toString("utf8"), STATEMENTS.grant, trust, "build grant", grantOf);
  if (g.ref !== ref) throw new SignatureError(`build grant is for ref ${g.ref.slice(0, 12)}, not ${ref.slice(0, 12)}`);
  if (now !== undefined && now > g.expiresAt) throw new SignatureError(`build grant for ref ${ref.slice(0, 12)} expired at ${new Date(g.expiresAt).toISOString()}`);
  return g;
}

/** A one-time key pair for one build: the private half for its Job, the public half for its grant. */
export function generateBuildKey(): { privatePem: string; publicKey: string } {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return { privatePem: privateKey.export({ type: "pkcs8", format: "pem" }).toString(), publicKey: publicKey.export({ type: "spki", format: "der" }).toString("base64") };
}

/** The trust store of one grant's build key. */
function buildKeyTrust(grant: BuildGrant): TrustStore {
  const key = createPublicKey({ key: Buffer.from(grant.buildKey, "base64"), format: "der", type: "spki" });
  if (key.asymmetricKeyType !== "ed25519") throw new SignatureError("build grant names a key that is not Ed25519");
  return new Map([[keyIdOf(key), key]]);
}

/** What a build offers for publication: its manifest, signed with the build's one-time key. */
export function signBuild(manifest: Manifest, buildSigner: Signer): string {
  return seal(STATEMENTS.build, manifest, buildSigner);
}

/** The manifest a build offered, if its signature is the one the grant's build key makes (shape checked). */
export function openBuild(text: string, grant: BuildGrant): Manifest {
  return unseal(text, STATEMENTS.build, buildKeyTrust(grant), "build offer", (p) => validateManifest(p));
}
