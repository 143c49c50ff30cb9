import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { discardLogger } from "../runtime/log.ts";
import {
  FileCerts,
  fromSecret,
  issueCa,
  issueServing,
  Reasons,
  renew,
  rotationNeeded,
  sansOf,
  servingSans,
  splitPem,
  toSecretData,
  type ServingCerts,
  type WebhookCertificates,
} from "./certs.ts";

const DAY = 24 * 60 * 60 * 1000;
const T0 = new Date(Date.UTC(2026, 0, 1));
const at = (days: number): Date => new Date(T0.getTime() + days * DAY);
const sans = servingSans({ name: "classcache-webhook", namespace: "classcache-system" }, { ips: ["127.0.0.1"] });

async function issueSet(now: Date, names = sans): Promise<WebhookCertificates> {
  const ca = await issueCa(now);
  const serving = await issueServing(ca, names, now);
  return { certPem: serving.certPem, keyPem: serving.keyPem, caPem: ca.certPem, caKeyPem: ca.keyPem };
}

describe("servingSans", () => {
  it("holds both service DNS names and the extra names, sorted and de-duplicated", () => {
    assert.deepEqual(servingSans({ name: "wh", namespace: "ns" }, { dnsNames: ["wh.ns.svc", "x.example"], ips: ["127.0.0.1", "127.0.0.1"] }), {
      dnsNames: ["wh.ns.svc", "wh.ns.svc.cluster.local", "x.example"],
      ips: ["127.0.0.1"],
    });
  });
});

describe("issued certificates", () => {
  let set: WebhookCertificates;
  before(async () => (set = await issueSet(T0)));

  it("are a P-256 CA valid one year and a serving certificate valid 90 days for the SANs", () => {
    const ca = new X509Certificate(set.caPem);
    const serving = new X509Certificate(set.certPem);
    assert.equal(ca.ca, true);
    assert.equal(serving.ca, false);
    assert.equal(ca.publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1");
    assert.equal(serving.publicKey.asymmetricKeyDetails?.namedCurve, "prime256v1");
    assert.equal(Math.round((ca.validToDate.getTime() - T0.getTime()) / DAY), 365);
    assert.equal(Math.round((serving.validToDate.getTime() - T0.getTime()) / DAY), 90);
    assert.ok(serving.validFromDate.getTime() <= T0.getTime(), "backdated a little for clock skew");
    assert.ok(serving.checkIssued(ca) && serving.verify(ca.publicKey));
    assert.deepEqual(sansOf(serving), sans);
    assert.deepEqual(serving.keyUsage, ["1.3.6.1.5.5.7.3.1"]); // serverAuth
  });

  it("never outlive their CA", async () => {
    const ca = await issueCa(T0);
    const late = await issueServing(ca, sans, at(330));
    assert.equal(new X509Certificate(late.certPem).validToDate.getTime(), new X509Certificate(ca.certPem).validToDate.getTime());
  });

  it("round-trip through the Secret's keys", () => {
    const data = toSecretData(set);
    assert.deepEqual(Object.keys(data).sort(), ["ca.crt", "ca.key", "tls.crt", "tls.key"]);
    assert.deepEqual(fromSecret({ data }), set);
  });
});

describe("rotationNeeded", () => {
  let set: WebhookCertificates;
  before(async () => (set = await issueSet(T0)));

  it("issues everything when nothing (or only part) is stored", () => {
    assert.equal(rotationNeeded(undefined, T0, sans)?.reason, Reasons.Missing);
    assert.equal(rotationNeeded({ ...set, caKeyPem: "" }, T0, sans)?.reason, Reasons.Missing);
  });

  it("issues everything when the stored set cannot be read", () => {
    assert.equal(rotationNeeded({ ...set, certPem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" }, T0, sans)?.reason, Reasons.Invalid);
  });

  it("leaves fresh certificates alone", () => {
    assert.equal(rotationNeeded(set, T0, sans), undefined);
    assert.equal(rotationNeeded(set, at(59), sans), undefined);
  });

  it("re-issues the serving certificate when less than a third of its lifetime is left", () => {
    const r = rotationNeeded(set, at(61), sans);
    assert.equal(r?.reason, Reasons.ServingExpiring);
    assert.match(r?.message ?? "", /lifetime left/);
  });

  it("rotates the CA when less than a third of its lifetime is left", () => {
    assert.equal(rotationNeeded(set, at(250), sans)?.reason, Reasons.CAExpiring);
  });

  it("re-issues when the SANs changed", () => {
    const more = servingSans({ name: "classcache-webhook", namespace: "classcache-system" }, { ips: ["127.0.0.1", "10.0.0.7"] });
    const r = rotationNeeded(set, T0, more);
    assert.equal(r?.reason, Reasons.SANsChanged);
    assert.match(r?.message ?? "", /10\.0\.0\.7/);
  });

  it("re-issues a serving certificate another CA signed, or whose key does not match", async () => {
    const other = await issueSet(T0);
    assert.equal(rotationNeeded({ ...set, certPem: other.certPem, keyPem: other.keyPem }, T0, sans)?.reason, Reasons.ServingMismatch);
    assert.equal(rotationNeeded({ ...set, keyPem: other.keyPem }, T0, sans)?.reason, Reasons.ServingMismatch);
  });

  it("starts over when the CA key does not belong to the CA", async () => {
    const other = await issueSet(T0);
    assert.equal(rotationNeeded({ ...set, caKeyPem: other.caKeyPem }, T0, sans)?.reason, Reasons.Invalid);
  });
});

describe("renew", () => {
  let set: WebhookCertificates;
  before(async () => (set = await issueSet(T0)));

  it("keeps the CA when only the serving certificate is due", async () => {
    const next = await renew(set, { reason: Reasons.ServingExpiring, message: "" }, at(61), sans);
    assert.equal(next.caPem, set.caPem);
    assert.equal(next.caKeyPem, set.caKeyPem);
    assert.notEqual(next.certPem, set.certPem);
    assert.equal(rotationNeeded(next, at(61), sans), undefined);
  });

  it("puts a new CA first and keeps the old one in the bundle during a CA rotation", async () => {
    const next = await renew(set, { reason: Reasons.CAExpiring, message: "" }, at(250), sans);
    const bundle = splitPem(next.caPem);
    assert.equal(bundle.length, 2);
    assert.equal(bundle[1], set.caPem, "the old CA is still trusted");
    assert.notEqual(bundle[0], set.caPem);
    assert.ok(new X509Certificate(next.certPem).checkIssued(new X509Certificate(bundle[0]!)), "the new serving certificate comes from the new CA");
    assert.equal(rotationNeeded(next, at(250), sans), undefined);
  });

  it("drops CAs from the bundle once they expired", async () => {
    const rotated = await renew(set, { reason: Reasons.CAExpiring, message: "" }, at(250), sans);
    const later = await renew(rotated, { reason: Reasons.ServingExpiring, message: "" }, at(370), sans);
    assert.equal(splitPem(later.caPem).length, 1);
  });
});

describe("FileCerts", () => {
  let dir: string;
  let set: WebhookCertificates;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-webhook-files-"));
    set = await issueSet(new Date());
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const write = async (c: ServingCerts): Promise<void> => {
    await writeFile(join(dir, "tls.crt"), c.certPem);
    await writeFile(join(dir, "tls.key"), c.keyPem);
    await writeFile(join(dir, "ca.crt"), c.caPem);
  };

  it("loads the files, publishes changes and ignores a set whose key does not match", async () => {
    const files = new FileCerts({ dir, logger: discardLogger });
    assert.equal(files.managesCaBundle, false);
    assert.equal(await files.reload(), false, "no files yet");
    await write(set);
    assert.equal(await files.reload(), true);
    assert.equal((await files.ready()).certPem, set.certPem);
    assert.equal(await files.reload(), false, "unchanged");

    const seen: ServingCerts[] = [];
    files.subscribe((c) => seen.push(c));
    const next = await issueSet(new Date());
    await writeFile(join(dir, "tls.crt"), next.certPem); // half-way through an update
    assert.equal(await files.reload(), false);
    await write(next);
    assert.equal(await files.reload(), true);
    assert.deepEqual(seen.map((c) => c.certPem), [next.certPem]);
  });

  it("serves the self-managed Secret as the webhook's pod mounts it: three of its keys, swapped at once on rotation", async () => {
    // The kubelet's layout of a Secret volume with items: each file a link into ..data, a link
    // to a timestamped directory that is replaced whole when the Secret changes.
    const mount = await mkdtemp(join(tmpdir(), "classcache-webhook-mount-"));
    const items = ["tls.crt", "tls.key", "ca.crt"];
    const project = async (certs: WebhookCertificates, version: string): Promise<void> => {
      const data = toSecretData(certs);
      await mkdir(join(mount, version));
      for (const key of items) await writeFile(join(mount, version, key), Buffer.from(data[key]!, "base64"));
      await symlink(version, join(mount, "..data_tmp"));
      await rename(join(mount, "..data_tmp"), join(mount, "..data"));
    };
    try {
      await project(set, "..v1");
      for (const key of items) await symlink(join("..data", key), join(mount, key));
      const files = new FileCerts({ dir: mount, logger: discardLogger });
      assert.equal(await files.reload(), true);
      assert.deepEqual(await files.ready(), { certPem: set.certPem, keyPem: set.keyPem, caPem: set.caPem });
      const rotated = await renew(set, { reason: Reasons.CAExpiring, message: "" }, new Date(), sans);
      await project(rotated, "..v2");
      assert.equal(await files.reload(), true);
      assert.equal(files.current()?.certPem, rotated.certPem);
      assert.equal(splitPem(files.current()?.caPem ?? "").length, 2, "the old CA stays trusted next to the new one");
    } finally {
      await rm(mount, { recursive: true, force: true });
    }
  });
});
