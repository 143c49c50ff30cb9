/**
 * Signed manifests. A builder signs the canonical JSON of a manifest with Ed25519; every agent
 * verifies the signature against the keys it trusts before anything the manifest names becomes
 * visible or servable. The directory only stores envelopes: whoever can write to it still
 * cannot get bytes into a workload JVM without a trusted signing key.
 */
import { createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from "node:crypto";
import { readFile } from "node:fs/promises";
import { ClasscacheError } from "../runtime/errors.ts";
import { canonicalJson, sha256Hex } from "../util/hash.ts";
import type { Manifest } from "./manifest.ts";

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

export function trustStoreFromPems(pems: string[]): TrustStore {
  const out: TrustStore = new Map();
  for (const pem of pems) {
    const k = createPublicKey(pem);
    if (k.asymmetricKeyType !== "ed25519") throw new ClasscacheError("input", "a trusted key is not an Ed25519 public key");
    out.set(keyIdOf(k), k);
  }
  return out;
}

export async function loadTrustStore(files: string[]): Promise<TrustStore> {
  return trustStoreFromPems(await Promise.all(files.map((f) => readFile(f, "utf8"))));
}

/**
 * `{<field>: payload, keyId, signature}`: `keyId` names the signing key (sha256 of its SPKI DER,
 * first 16 hex digits), `signature` is base64 Ed25519 over the payload's canonical JSON.
 */
function seal(field: string, payload: unknown, signer: Signer): string {
  const signature = sign(null, Buffer.from(canonicalJson(payload)), signer.privateKey).toString("base64");
  return JSON.stringify({ [field]: payload, keyId: signer.keyId, signature });
}

export class SignatureError extends Error {}

/**
 * The payload of a sealed text, once its signature verifies against a trusted key. `names`
 * says what it is in errors: the envelope (not JSON, malformed) and the signed thing.
 */
function unseal(text: string, field: string, trust: TrustStore, names: { envelope: string; signed: string }, canonical: (payload: object) => object = (p) => p): object {
  let env: Record<string, unknown>;
  try {
    env = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new SignatureError(`${names.envelope} is not JSON`);
  }
  const payload = env?.[field];
  if (!env || typeof env !== "object" || typeof env["signature"] !== "string" || typeof env["keyId"] !== "string" || !payload || typeof payload !== "object") {
    throw new SignatureError(`${names.envelope} is malformed`);
  }
  const key = trust.get(env["keyId"]);
  if (!key) throw new SignatureError(`${names.signed} signed by untrusted key ${env["keyId"]}`);
  const signed = canonical(payload);
  if (!verify(null, Buffer.from(canonicalJson(signed)), key, Buffer.from(env["signature"], "base64"))) throw new SignatureError(`${names.signed} signature does not verify`);
  return signed;
}

export function signManifest(manifest: Manifest, signer: Signer): string {
  return seal("manifest", manifest, signer);
}

/**
 * Parses an envelope and verifies its signature; also checks that the manifest is the one for
 * `expectedKey`. Throws SignatureError on anything wrong.
 */
export function openEnvelope(text: string, trust: TrustStore, expectedKey?: string): Manifest {
  const manifest = unseal(text, "manifest", trust, { envelope: "manifest envelope", signed: "manifest" }) as Manifest;
  if (expectedKey !== undefined && manifest.key !== expectedKey) throw new SignatureError(`manifest is for key ${manifest.key}, not ${expectedKey}`);
  return manifest;
}

/**
 * The manifest inside an envelope, NOT verified: for showing what a directory says (stats), never
 * for using an archive. Undefined when the text is no manifest envelope.
 */
export function peekEnvelope(text: string): Manifest | undefined {
  try {
    const m = (JSON.parse(text) as { manifest?: Manifest }).manifest;
    return m && typeof m === "object" && typeof m.key === "string" ? m : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A binding from a ref (the digest a ClassCache computes from a workload's build inputs, plus
 * the node's arch) to the key of the archive built for it. Signed like a manifest: whoever can
 * write to the directory still cannot point a workload at another archive.
 */
export interface RefBinding {
  ref: string;
  arch: string;
  key: string;
}

const bindingOf = (b: RefBinding): RefBinding => ({ ref: b.ref, arch: b.arch, key: b.key });

export function signBinding(binding: RefBinding, signer: Signer): string {
  return seal("binding", bindingOf(binding), signer);
}

/** Parses and verifies a signed binding, and checks it is the one for `ref` and `arch`. */
export function openBinding(text: string, trust: TrustStore, ref: string, arch: string): RefBinding {
  const names = { envelope: "ref binding", signed: "ref binding" };
  const b = unseal(text, "binding", trust, names, (p) => {
    if (typeof (p as RefBinding).key !== "string") throw new SignatureError("ref binding is malformed");
    return bindingOf(p as RefBinding);
  }) as RefBinding;
  if (b.ref !== ref || b.arch !== arch) throw new SignatureError(`ref binding is for ${b.ref}/${b.arch}, not ${ref}/${arch}`);
  return b;
}

/**
 * The token a ClassCache's build Job presents to a node agent to upload the build of one ref:
 * an HMAC of the ref under a key only the operator and the agents hold. It is good for that ref
 * only, so a pod in one namespace cannot publish an archive for another namespace's ref.
 */
export function buildToken(buildKey: string, ref: string): string {
  return createHmac("sha256", buildKey).update(`classcache build ${ref}`).digest("hex");
}
