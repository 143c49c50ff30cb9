import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { Manifest } from "./manifest.ts";
import { generateSigningKey, openBinding, openEnvelope, SignatureError, signBinding, signerFromPem, signManifest, trustStoreFromPems } from "./signing.ts";

const keys = generateSigningKey();
const signer = signerFromPem(keys.privatePem);
const trust = trustStoreFromPems([keys.publicPem]);
const stranger = signerFromPem(generateSigningKey().privatePem);
const KEY = "a".repeat(64);
const REF = "b".repeat(64);

describe("signed manifests and ref bindings", () => {
  test("a manifest opens only for a trusted key, its own key and untouched bytes", () => {
    const manifest = { key: KEY, archive: { sha256: "c".repeat(64) } } as unknown as Manifest;
    const text = signManifest(manifest, signer);
    assert.deepEqual(openEnvelope(text, trust, KEY), manifest);
    assert.throws(() => openEnvelope(text, trust, "d".repeat(64)), /manifest is for key a+, not d+/);
    assert.throws(() => openEnvelope(signManifest(manifest, stranger), trust), /manifest signed by untrusted key/);
    assert.throws(() => openEnvelope(text.replace("c".repeat(64), "e".repeat(64)), trust), /manifest signature does not verify/);
    assert.throws(() => openEnvelope("{", trust), /manifest envelope is not JSON/);
    assert.throws(() => openEnvelope(JSON.stringify({ keyId: signer.keyId }), trust), /manifest envelope is malformed/);
  });

  test("a binding opens only for its ref and arch, signed by a trusted key, without extra fields", () => {
    const text = signBinding({ ref: REF, arch: "amd64", key: KEY, extra: "dropped" } as never, signer);
    assert.deepEqual(openBinding(text, trust, REF, "amd64"), { ref: REF, arch: "amd64", key: KEY });
    assert.throws(() => openBinding(text, trust, REF, "arm64"), /ref binding is for b+\/amd64, not b+\/arm64/);
    assert.throws(() => openBinding(signBinding({ ref: REF, arch: "amd64", key: KEY }, stranger), trust, REF, "amd64"), /untrusted key/);
    assert.throws(() => openBinding(text.replace(KEY, "f".repeat(64)), trust, REF, "amd64"), /signature does not verify/);
    assert.throws(() => openBinding(JSON.stringify({ binding: { ref: REF, arch: "amd64" }, keyId: signer.keyId, signature: "x" }), trust, REF, "amd64"), (e: unknown) => e instanceof SignatureError && /malformed/.test(e.message));
  });
});
