import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { sampleManifest } from "../../test/support/manifest.ts";
import { generateBuildKey, generateSigningKey, openBinding, openBuild, openEnvelope, openGrant, SignatureError, signBinding, signBuild, signerFromPem, signGrant, signManifest, STATEMENTS, trustStoreFromPems, type BuildGrant, type RefBinding } from "./signing.ts";

const keys = generateSigningKey();
const signer = signerFromPem(keys.privatePem);
const trust = trustStoreFromPems([keys.publicPem]);
const stranger = signerFromPem(generateSigningKey().privatePem);
const manifest = sampleManifest();
const KEY = manifest.key;
const REF = "b".repeat(64);
const binding: RefBinding = { scope: "shop", ref: REF, arch: "amd64", key: KEY, owner: "uid-1", issuedAt: 1_700_000_000_000 };
const buildKey = generateBuildKey();
const grantOf = (o: Partial<BuildGrant> = {}): BuildGrant => ({ scope: "shop", ref: REF, classCache: "shop/shop", owner: "uid-1", buildKey: buildKey.publicKey, issuedAt: 1, expiresAt: 10_000, ...o });

describe("signed statements", () => {
  test("a manifest opens only for a trusted key, its own key and untouched bytes", () => {
    const text = signManifest(manifest, signer);
    assert.deepEqual(openEnvelope(text, trust, KEY), manifest);
    assert.throws(() => openEnvelope(text, trust, "d".repeat(64)), /manifest is for key [0-9a-f]+, not d+/);
    assert.throws(() => openEnvelope(signManifest(manifest, stranger), trust), /manifest signed by untrusted key/);
    assert.throws(() => openEnvelope(text.replace(manifest.archive.sha256, "e".repeat(64)), trust), /manifest signature does not verify/);
    assert.throws(() => openEnvelope("{", trust), /manifest is not JSON/);
    assert.throws(() => openEnvelope(JSON.stringify({ keyId: signer.keyId }), trust), /manifest is malformed/);
  });

  test("a signed manifest of the wrong shape is refused after its signature verifies", () => {
    const escaping = { ...manifest, archive: { ...manifest.archive, file: "../../etc/shadow" } };
    assert.throws(() => openEnvelope(signManifest(escaping, signer), trust), (e: unknown) => e instanceof SignatureError && /signed but malformed: .*archive/.test(e.message));
  });

  test("a binding opens only for its ref and arch, signed by a trusted key, without extra fields", () => {
    const text = signBinding({ ...binding, extra: "dropped" } as never, signer);
    assert.deepEqual(openBinding(text, trust, REF, "amd64"), binding);
    assert.throws(() => openBinding(text, trust, REF, "arm64"), /ref binding is for b+\/amd64, not b+\/arm64/);
    assert.throws(() => openBinding(signBinding(binding, stranger), trust, REF, "amd64"), /untrusted key/);
    assert.throws(() => openBinding(text.replace(KEY, "f".repeat(64)), trust, REF, "amd64"), /signature does not verify/);
    assert.throws(() => openBinding(text.replace('"issuedAt":1700000000000', '"issuedAt":1800000000000'), trust, REF, "amd64"), /signature does not verify/, "the time is signed: it cannot be moved forward");
  });

  test("one kind of statement never passes as another, even with a payload of the other's shape", () => {
    // A binding presented as a manifest (the payload is not a manifest, and the type says so).
    assert.throws(() => openEnvelope(signBinding(binding, signer), trust), (e: unknown) => e instanceof SignatureError && /manifest expected, got a statement of type "classcache.dev\/binding\/v2"/.test(e.message));
    // A manifest envelope relabelled as a binding: the type is signed, so the signature fails.
    const relabelled = JSON.parse(signManifest(manifest, signer)) as Record<string, unknown>;
    relabelled["type"] = STATEMENTS.binding;
    relabelled["payload"] = binding;
    assert.throws(() => openBinding(JSON.stringify(relabelled), trust, REF, "amd64"), /signature does not verify/);
    // A grant is no binding, and a binding is no grant.
    const grant = signGrant(grantOf(), signer);
    assert.throws(() => openBinding(Buffer.from(grant, "base64url").toString(), trust, REF, "amd64"), /ref binding expected/);
    assert.throws(() => openGrant(Buffer.from(signBinding(binding, signer)).toString("base64url"), trust, REF), /build grant expected/);
  });

  test("a grant opens for its ref only, before it expires, and its scope, owner and build key are what was signed", () => {
    const grant = signGrant(grantOf(), signer);
    assert.match(grant, /^[A-Za-z0-9_-]+$/, "fits an Authorization header");
    assert.deepEqual(openGrant(grant, trust, REF, 9_999), grantOf());
    assert.throws(() => openGrant(grant, trust, REF, 10_001), /build grant for ref b+ expired/);
    assert.throws(() => openGrant(grant, trust, "c".repeat(64)), /build grant is for ref b+, not c+/);
    assert.throws(() => openGrant(signGrant(grantOf(), stranger), trust, REF), /untrusted key/);
    assert.throws(() => openGrant("not a grant!", trust, REF), /build grant is malformed/);
    assert.throws(() => signGrant(grantOf({ scope: "Not_A_Namespace" }), signer), /scope is missing or malformed/);
  });

  test("a build offer opens only with the one-time key its grant names", () => {
    const offered = signBuild(manifest, signerFromPem(buildKey.privatePem));
    assert.deepEqual(openBuild(offered, grantOf()), manifest);
    assert.throws(() => openBuild(signBuild(manifest, signerFromPem(generateBuildKey().privatePem)), grantOf()), /build offer signed by untrusted key/);
    assert.throws(() => openBuild(signManifest(manifest, signer), grantOf()), /build offer expected, got a statement of type "classcache.dev\/manifest\/v2"/, "an operator-signed manifest is no build offer");
    assert.throws(() => openEnvelope(offered, trust), /manifest expected/, "and a build offer is no manifest");
  });
});
