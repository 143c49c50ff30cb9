/**
 * Rotating the cluster's signing key without rebuilding any archive. The Secret
 * `classcache-signing-key` holds the key the operator signs with (`signing.pem`, `signing.pub`)
 * and, while a rotation is under way, the public keys it replaced (`previous.pub`). Everything
 * that verifies trusts all of them (the operator, and the agents through the ConfigMap
 * `classcache-trust`, which rolls them); the operator signs every manifest and binding it finds
 * signed by an older key again with the current one. `retire` then drops the older keys.
 */
import { createPublicKey } from "node:crypto";
import { generateSigningKey, trustStoreFromPems } from "../archive/signing.ts";
import type { KubeClient } from "../kube/client.ts";
import { Secrets } from "../kube/resource.ts";
import type { KubeObject } from "../kube/types.ts";
import { ClasscacheError } from "../runtime/errors.ts";
import { NAMES, SECRET_KEYS, SYSTEM_NAMESPACE } from "./constants.ts";

type SecretObject = KubeObject & { data?: Record<string, string> };

const decode = (s: SecretObject, k: string): string | undefined => (s.data?.[k] === undefined ? undefined : Buffer.from(s.data[k], "base64").toString("utf8"));
const encode = (v: string): string => Buffer.from(v).toString("base64");

async function signingSecret(client: KubeClient): Promise<SecretObject> {
  try {
    return await client.get<SecretObject>(Secrets, NAMES.signingKey, { namespace: SYSTEM_NAMESPACE });
  } catch (err) {
    throw new ClasscacheError("not-found", `cannot read the Secret ${NAMES.signingKey} in ${SYSTEM_NAMESPACE}`, { hint: "the operator creates it on its first pass; run this with a kubeconfig that may read and update Secrets there", cause: err });
  }
}

/** Makes a new signing key the current one and keeps the replaced public key trusted. Returns the key ids. */
export async function rotateSigningKey(client: KubeClient): Promise<{ previous: string[]; current: string }> {
  const s = await signingSecret(client);
  const oldPublic = decode(s, SECRET_KEYS.trust) ?? createPublicKey(decode(s, SECRET_KEYS.signingKey) ?? "").export({ type: "spki", format: "pem" }).toString();
  const previous = [decode(s, SECRET_KEYS.previous) ?? "", oldPublic].join("\n").trim() + "\n";
  const next = generateSigningKey();
  const data = { ...s.data, [SECRET_KEYS.signingKey]: encode(next.privatePem), [SECRET_KEYS.trust]: encode(next.publicPem), [SECRET_KEYS.previous]: encode(previous) };
  await client.update(Secrets, { ...s, data }, { namespace: SYSTEM_NAMESPACE });
  return { previous: pemIds(previous), current: pemIds(next.publicPem)[0]! };
}

/** Stops trusting every key but the current one. */
export async function retireSigningKeys(client: KubeClient): Promise<{ retired: string[] }> {
  const s = await signingSecret(client);
  const previous = decode(s, SECRET_KEYS.previous);
  if (previous === undefined) return { retired: [] };
  const data = { ...s.data };
  delete data[SECRET_KEYS.previous];
  await client.update(Secrets, { ...s, data }, { namespace: SYSTEM_NAMESPACE });
  return { retired: pemIds(previous) };
}

/** The key ids (as statements name their signer) of a PEM bundle. */
function pemIds(bundle: string): string[] {
  return [...trustStoreFromPems([bundle]).keys()];
}
