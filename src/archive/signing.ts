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

export interface Envelope {
  manifest: Manifest;
  /** Which key signed it: sha256 of the public key (SPKI DER), first 16 hex digits. */
  keyId: string;
  /** base64 Ed25519 signature of canonicalJson(manifest). */
  signature: string;
}

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

export function signManifest(manifest: Manifest, signer: Signer): string {
  const signature = sign(null, Buffer.from(canonicalJson(manifest)), signer.privateKey).toString("base64");
  const env: Envelope = { manifest, keyId: signer.keyId, signature };
  return JSON.stringify(env);
}

export class SignatureError extends Error {}

/**
 * Parses an envelope and verifies its signature; also checks that the manifest is the one for
 * `expectedKey`. Throws SignatureError on anything wrong.
 */
export function openEnvelope(text: string, trust: TrustStore, expectedKey?: string): Manifest {
  let env: Envelope;
  try {
    env = JSON.parse(text) as Envelope;
  } catch {
    throw new SignatureError("manifest envelope is not JSON");
  }
  if (!env || typeof env !== "object" || typeof env.signature !== "string" || typeof env.keyId !== "string" || typeof env.manifest !== "object") {
    throw new SignatureError("manifest envelope is malformed");
  }
  const key = trust.get(env.keyId);
  if (!key) throw new SignatureError(`manifest signed by untrusted key ${env.keyId}`);
  const ok = verify(null, Buffer.from(canonicalJson(env.manifest)), key, Buffer.from(env.signature, "base64"));
  if (!ok) throw new SignatureError("manifest signature does not verify");
  if (expectedKey !== undefined && env.manifest.key !== expectedKey) throw new SignatureError(`manifest is for key ${env.manifest.key}, not ${expectedKey}`);
  return env.manifest;
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

export function signBinding(binding: RefBinding, signer: Signer): string {
  const b: RefBinding = { ref: binding.ref, arch: binding.arch, key: binding.key };
  const signature = sign(null, Buffer.from(canonicalJson(b)), signer.privateKey).toString("base64");
  return JSON.stringify({ binding: b, keyId: signer.keyId, signature });
}

/** Parses and verifies a signed binding, and checks it is the one for `ref` and `arch`. */
export function openBinding(text: string, trust: TrustStore, ref: string, arch: string): RefBinding {
  let env: { binding?: RefBinding; keyId?: unknown; signature?: unknown };
  try {
    env = JSON.parse(text) as typeof env;
  } catch {
    throw new SignatureError("ref binding is not JSON");
  }
  const b = env?.binding;
  if (!b || typeof b !== "object" || typeof env.keyId !== "string" || typeof env.signature !== "string" || typeof b.key !== "string") {
    throw new SignatureError("ref binding is malformed");
  }
  const key = trust.get(env.keyId);
  if (!key) throw new SignatureError(`ref binding signed by untrusted key ${env.keyId}`);
  const canonical: RefBinding = { ref: b.ref, arch: b.arch, key: b.key };
  if (!verify(null, Buffer.from(canonicalJson(canonical)), key, Buffer.from(env.signature, "base64"))) throw new SignatureError("ref binding signature does not verify");
  if (b.ref !== ref || b.arch !== arch) throw new SignatureError(`ref binding is for ${b.ref}/${b.arch}, not ${ref}/${arch}`);
  return canonical;
}

/**
 * The token a ClassCache's build Job presents to a node agent to upload the build of one ref:
 * an HMAC of the ref under a key only the operator and the agents hold. It is good for that ref
 * only, so a pod in one namespace cannot publish an archive for another namespace's ref.
 */
export function buildToken(buildKey: string, ref: string): string {
  return createHmac("sha256", buildKey).update(`classcache build ${ref}`).digest("hex");
}
