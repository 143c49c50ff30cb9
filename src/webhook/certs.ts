/**
 * The webhook's TLS: where the serving certificate and the CA bundle come from.
 *
 * Two sources, one contract (CertSource):
 *  - SelfManagedCerts: the operator is its own CA (ECDSA P-256). CA and serving certificate live in
 *    one Secret so that every replica serves the same certificate; a pure policy (rotationNeeded)
 *    decides when to re-issue, and writes are optimistic (resourceVersion), so two replicas never
 *    both mint a CA.
 *  - FileCerts: cert-manager (or anyone) writes tls.crt/tls.key/ca.crt into a mounted directory;
 *    the files are re-read when they change. The caBundle is then cainjector's job, not ours.
 * StaticCertSource holds certificates handed to it (tests, one-machine demos).
 */
import { X509Certificate as NodeX509, createHash, createPrivateKey, webcrypto } from "node:crypto";
import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import "reflect-metadata"; // @peculiar/x509 registers its algorithms with tsyringe, which needs it
import * as x509 from "@peculiar/x509";
import type { KubeClient } from "../kube/client.ts";
import { isNotFound } from "../kube/errors.ts";
import { Secrets } from "../kube/resource.ts";
import { retryOnConflict } from "../kube/retry.ts";
import type { KubeObject } from "../kube/types.ts";
import { realClock, sleep, type Clock } from "../operator/runtime/clock.ts";
import { NAMES } from "../operator/constants.ts";
import type { Logger } from "../runtime/log.ts";
import { aborted, type Runnable } from "../runtime/runnable.ts";

const DAY_MS = 24 * 60 * 60 * 1000;
export const CA_LIFETIME_MS = 365 * DAY_MS;
export const SERVING_LIFETIME_MS = 90 * DAY_MS;
/** Re-issue when less than this share of a certificate's lifetime is left. */
export const RENEW_WHEN_LEFT = 1 / 3;
/** notBefore is set this far in the past, so a peer whose clock is a little behind accepts it. */
const BACKDATE_MS = 5 * 60 * 1000;
export const DEFAULT_SECRET_NAME = "classcache-webhook-tls";
export const DEFAULT_SERVICE_NAME = NAMES.webhook;

/** What a TLS server and its clients need. PEM throughout. */
export interface ServingCerts {
  /** The serving certificate (leaf). */
  certPem: string;
  keyPem: string;
  /** Every CA a client should trust: the signing CA first, then older ones still valid. */
  caPem: string;
}

/** The self-managed set: ServingCerts plus the key of the signing CA (the first of caPem). */
export interface WebhookCertificates extends ServingCerts {
  caKeyPem: string;
}

/** The names the serving certificate must carry. */
export interface Sans {
  dnsNames: string[];
  ips: string[];
}

// ---------------------------------------------------------------------------------------------
// Policy

/** Why certificates are (re-)issued. */
export const Reasons = {
  /** Nothing stored yet, or a part is missing: issue everything. */
  Missing: "Missing",
  /** Stored but unreadable, or the CA key does not match the CA: issue everything. */
  Invalid: "Invalid",
  CAExpiring: "CAExpiring",
  ServingExpiring: "ServingExpiring",
  SANsChanged: "SANsChanged",
  /** The serving certificate was not signed by the signing CA, or its key does not match it. */
  ServingMismatch: "ServingMismatch",
} as const;
export type Reason = (typeof Reasons)[keyof typeof Reasons];

export interface Rotation {
  reason: Reason;
  message: string;
}

/** Reasons that need a new CA (and then a new serving certificate too). */
export function needsNewCa(reason: Reason): boolean {
  return reason === Reasons.Missing || reason === Reasons.Invalid || reason === Reasons.CAExpiring;
}

/**
 * Whether `certs` must be (partly) re-issued at `now` for a server named `sans`; undefined when
 * they are fine. Pure: it parses, compares and decides, nothing else.
 */
export function rotationNeeded(certs: WebhookCertificates | undefined, now: Date, sans: Sans): Rotation | undefined {
  if (!certs || !certs.certPem || !certs.keyPem || !certs.caPem || !certs.caKeyPem) {
    return { reason: Reasons.Missing, message: "no complete certificate set is stored" };
  }
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(certs);
  } catch (err) {
    return { reason: Reasons.Invalid, message: `the stored certificates cannot be read: ${(err as Error).message}` };
  }
  const { ca, caKeyMatches, serving, servingKeyMatches } = parsed;
  if (!caKeyMatches) return { reason: Reasons.Invalid, message: "ca.key does not belong to the first certificate of ca.crt" };
  const caLeft = leftShare(ca, now);
  if (caLeft < RENEW_WHEN_LEFT) {
    return { reason: Reasons.CAExpiring, message: `the CA expires at ${ca.validToDate.toISOString()} (${pct(caLeft)} of its lifetime left)` };
  }
  if (!serving.checkIssued(ca) || !serving.verify(ca.publicKey)) {
    return { reason: Reasons.ServingMismatch, message: "the serving certificate was not issued by the signing CA" };
  }
  if (!servingKeyMatches) return { reason: Reasons.ServingMismatch, message: "tls.key does not belong to tls.crt" };
  const servingLeft = leftShare(serving, now);
  if (servingLeft < RENEW_WHEN_LEFT) {
    return {
      reason: Reasons.ServingExpiring,
      message: `the serving certificate expires at ${serving.validToDate.toISOString()} (${pct(servingLeft)} of its lifetime left)`,
    };
  }
  const have = sansOf(serving);
  if (!sameSans(have, sans)) {
    return { reason: Reasons.SANsChanged, message: `the serving certificate is for ${describeSans(have)}, wanted ${describeSans(sans)}` };
  }
  return undefined;
}

/** The service DNS names plus any extra names and addresses, de-duplicated and sorted. */
export function servingSans(service: { name: string; namespace: string }, extra: { dnsNames?: string[]; ips?: string[] } = {}): Sans {
  const dns = [`${service.name}.${service.namespace}.svc`, `${service.name}.${service.namespace}.svc.cluster.local`, ...(extra.dnsNames ?? [])];
  return { dnsNames: [...new Set(dns)].sort(), ips: [...new Set(extra.ips ?? [])].sort() };
}

function parse(certs: WebhookCertificates): { ca: NodeX509; caKeyMatches: boolean; serving: NodeX509; servingKeyMatches: boolean } {
  const ca = splitPem(certs.caPem)[0];
  if (!ca) throw new Error("ca.crt holds no certificate");
  const caCert = new NodeX509(ca);
  const serving = new NodeX509(certs.certPem);
  return {
    ca: caCert,
    caKeyMatches: caCert.checkPrivateKey(createPrivateKey(certs.caKeyPem)),
    serving,
    servingKeyMatches: serving.checkPrivateKey(createPrivateKey(certs.keyPem)),
  };
}

function leftShare(cert: NodeX509, now: Date): number {
  const from = cert.validFromDate.getTime();
  const to = cert.validToDate.getTime();
  if (to <= from) return 0;
  return Math.max(0, (to - now.getTime()) / (to - from));
}

function pct(share: number): string {
  return `${Math.round(share * 100)} %`;
}

/** The DNS names and IP addresses of a certificate's subjectAltName. */
export function sansOf(cert: NodeX509): Sans {
  const dnsNames: string[] = [];
  const ips: string[] = [];
  for (const entry of (cert.subjectAltName ?? "").split(/,\s*/)) {
    if (entry.startsWith("DNS:")) dnsNames.push(entry.slice(4));
    else if (entry.startsWith("IP Address:")) ips.push(entry.slice(11));
  }
  return { dnsNames: dnsNames.sort(), ips: ips.sort() };
}

function sameSans(a: Sans, b: Sans): boolean {
  const key = (s: Sans): string => JSON.stringify([[...new Set(s.dnsNames)].sort(), [...new Set(s.ips.map(normalizeIp))].sort()]);
  return key(a) === key(b);
}

function normalizeIp(ip: string): string {
  return isIP(ip) === 6 ? ip.toLowerCase() : ip;
}

function describeSans(s: Sans): string {
  return [...s.dnsNames, ...s.ips].join(", ") || "no names";
}

/** The PEM certificates of a bundle, in order. */
export function splitPem(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g)?.map((b) => `${b}\n`) ?? [];
}

// ---------------------------------------------------------------------------------------------
// Issuing

const ALG: webcrypto.EcKeyGenParams = { name: "ECDSA", namedCurve: "P-256" };
const SIGNING: webcrypto.EcdsaParams = { name: "ECDSA", hash: "SHA-256" };
const subtle = webcrypto.subtle;

/** A new CA: self-signed, valid CA_LIFETIME_MS from `now`. */
export async function issueCa(now: Date, commonName = "classcache-webhook-ca"): Promise<{ certPem: string; keyPem: string }> {
  const keys = (await subtle.generateKey(ALG, true, ["sign", "verify"]));
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      name: `CN=${commonName}`,
      serialNumber: serial(),
      notBefore: new Date(now.getTime() - BACKDATE_MS),
      notAfter: new Date(now.getTime() + CA_LIFETIME_MS),
      keys,
      signingAlgorithm: SIGNING,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false),
      ],
    },
  );
  return { certPem: cert.toString("pem") + "\n", keyPem: await keyPem(keys.privateKey) };
}

/** A serving certificate for `sans`, signed by `ca`; valid SERVING_LIFETIME_MS, never past the CA. */
export async function issueServing(ca: { certPem: string; keyPem: string }, sans: Sans, now: Date): Promise<{ certPem: string; keyPem: string }> {
  if (sans.dnsNames.length === 0 && sans.ips.length === 0) throw new Error("a serving certificate needs at least one DNS name or IP address");
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKey = await subtle.importKey("pkcs8", pemBody(ca.keyPem), ALG, false, ["sign"]);
  const keys = (await subtle.generateKey(ALG, true, ["sign", "verify"]));
  const notAfter = Math.min(now.getTime() + SERVING_LIFETIME_MS, caCert.notAfter.getTime());
  const cert = await x509.X509CertificateGenerator.create(
    {
      subject: `CN=${sans.dnsNames[0] ?? sans.ips[0]}`,
      issuer: caCert.subject,
      serialNumber: serial(),
      notBefore: new Date(now.getTime() - BACKDATE_MS),
      notAfter: new Date(notAfter),
      publicKey: keys.publicKey,
      signingKey: caKey,
      signingAlgorithm: SIGNING,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
        new x509.SubjectAlternativeNameExtension([
          ...sans.dnsNames.map((value) => ({ type: "dns" as const, value })),
          ...sans.ips.map((value) => ({ type: "ip" as const, value })),
        ]),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false),
        await x509.AuthorityKeyIdentifierExtension.create(caCert, false),
      ],
    },
  );
  return { certPem: cert.toString("pem") + "\n", keyPem: await keyPem(keys.privateKey) };
}

/**
 * What to store after `rotation`: a new CA when the policy says so — the previous CAs that are
 * still valid stay in the bundle behind it, so clients that already trust them keep trusting
 * replicas still serving a certificate they signed — and always a new serving certificate.
 */
export async function renew(prior: WebhookCertificates | undefined, rotation: Rotation, now: Date, sans: Sans): Promise<WebhookCertificates> {
  let ca = { certPem: splitPem(prior?.caPem ?? "")[0] ?? "", keyPem: prior?.caKeyPem ?? "" };
  let bundle = validCas(prior?.caPem ?? "", now);
  if (needsNewCa(rotation.reason)) {
    ca = await issueCa(now);
    bundle = rotation.reason === Reasons.CAExpiring ? [ca.certPem, ...bundle] : [ca.certPem];
  }
  const serving = await issueServing(ca, sans, now);
  return { certPem: serving.certPem, keyPem: serving.keyPem, caPem: bundle.join(""), caKeyPem: ca.keyPem };
}

/** The certificates of a bundle that are still valid at `now`, in order (unreadable ones dropped). */
function validCas(bundlePem: string, now: Date): string[] {
  return splitPem(bundlePem).filter((pem) => {
    try {
      return new NodeX509(pem).validToDate.getTime() > now.getTime();
    } catch {
      return false;
    }
  });
}

function serial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0] ?? 0) & 0x7f; // positive
  return Buffer.from(bytes).toString("hex");
}

async function keyPem(key: webcrypto.CryptoKey): Promise<string> {
  const der = Buffer.from(await subtle.exportKey("pkcs8", key));
  const b64 = der.toString("base64").replace(/.{64}/g, "$&\n").replace(/\n$/, "");
  return `-----BEGIN PRIVATE KEY-----\n${b64}\n-----END PRIVATE KEY-----\n`;
}

function pemBody(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, ""), "base64");
}

/** SHA-256 of a certificate, for logs ("which certificate is served now"). */
export function fingerprint(certPem: string): string {
  return createHash("sha256").update(pemBody(certPem)).digest("hex").slice(0, 16);
}

// ---------------------------------------------------------------------------------------------
// Sources

/** Where the webhook server and the registrar get their certificates. */
export interface CertSource extends Runnable {
  /**
   * True when the caBundle of the webhook configurations is ours to write (self-managed); false
   * when something else injects it (cert-manager's cainjector).
   */
  readonly managesCaBundle: boolean;
  /** The certificates now, or undefined before the first load. */
  current(): ServingCerts | undefined;
  /** Resolves with the first certificates; rejects when `signal` aborts first. */
  ready(signal?: AbortSignal): Promise<ServingCerts>;
  /** Called with every new set after the first (rotation, reload); returns the unsubscribe function. */
  subscribe(fn: (certs: ServingCerts) => void): () => void;
}

/** The publishing half every source shares: the current set, the first-set promise, subscribers. */
class CertFeed<T extends ServingCerts> {
  #current: T | undefined;
  readonly #subscribers = new Set<(certs: T) => void>();
  #resolveFirst: (certs: T) => void = () => {};
  readonly #first = new Promise<T>((resolve) => (this.#resolveFirst = resolve));
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  current(): T | undefined {
    return this.#current;
  }

  ready(signal?: AbortSignal): Promise<T> {
    if (this.#current) return Promise.resolve(this.#current);
    if (!signal) return this.#first;
    return Promise.race([
      this.#first,
      aborted(signal).then(() => Promise.reject(signal.reason instanceof Error ? signal.reason : new Error("aborted"))),
    ]);
  }

  subscribe(fn: (certs: T) => void): () => void {
    this.#subscribers.add(fn);
    return () => this.#subscribers.delete(fn);
  }

  /** Publishes `certs` when they differ from the current set; true when they did. */
  publish(certs: T): boolean {
    const prev = this.#current;
    if (prev && prev.certPem === certs.certPem && prev.keyPem === certs.keyPem && prev.caPem === certs.caPem) return false;
    this.#current = certs;
    if (!prev) {
      this.#resolveFirst(certs);
      return true;
    }
    for (const fn of this.#subscribers) {
      try {
        fn(certs);
      } catch (err) {
        this.#log.error("certificate subscriber failed", { error: (err as Error)?.message ?? String(err) });
      }
    }
    return true;
  }
}

/** A source whose certificates are published through a CertFeed: current(), ready() and subscribe() come from it. */
abstract class FeedSource<T extends ServingCerts> {
  protected readonly feed: CertFeed<T>;

  constructor(log: Logger) {
    this.feed = new CertFeed<T>(log);
  }

  current(): T | undefined {
    return this.feed.current();
  }

  ready(signal?: AbortSignal): Promise<T> {
    return this.feed.ready(signal);
  }

  subscribe(fn: (certs: ServingCerts) => void): () => void {
    return this.feed.subscribe(fn);
  }
}

export interface SelfManagedCertsOptions {
  client: KubeClient;
  /** The operator's namespace: the Secret lives here. */
  namespace: string;
  secretName?: string;
  /** The Service in front of the webhook; its DNS names go into the certificate. */
  service?: { name: string; namespace?: string };
  /** More names, e.g. ["127.0.0.1"] in ips when the API server calls an operator outside the cluster. */
  extraDnsNames?: string[];
  extraIps?: string[];
  logger: Logger;
  clock?: Clock;
  /** How often the Secret is read again (another replica may have rotated it), default 60 s. */
  resyncMs?: number;
  /** Delay before retrying a failed sync, default 5 s. */
  retryMs?: number;
}

/** The operator as its own CA; the Secret is shared by every replica. */
export class SelfManagedCerts extends FeedSource<WebhookCertificates> implements CertSource {
  readonly name = "webhook-certs";
  readonly managesCaBundle = true;
  readonly secretName: string;
  readonly sans: Sans;
  readonly #opts: SelfManagedCertsOptions;
  readonly #clock: Clock;
  readonly #log: Logger;

  constructor(opts: SelfManagedCertsOptions) {
    const log = opts.logger.with({ component: "webhook-certs" });
    super(log);
    this.#opts = opts;
    this.#clock = opts.clock ?? realClock;
    this.#log = log;
    this.secretName = opts.secretName ?? DEFAULT_SECRET_NAME;
    const service = { name: opts.service?.name ?? DEFAULT_SERVICE_NAME, namespace: opts.service?.namespace ?? opts.namespace };
    this.sans = servingSans(service, { dnsNames: opts.extraDnsNames ?? [], ips: opts.extraIps ?? [] });
  }

  /** Syncs now, then every resyncMs (after a failure: every retryMs) until `signal` aborts. */
  async start(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      let wait = this.#opts.resyncMs ?? 60_000;
      try {
        await this.sync(signal);
      } catch (err) {
        if (signal.aborted) break;
        wait = this.#opts.retryMs ?? 5_000;
        this.#log.error("webhook certificate sync failed", { error: (err as Error)?.message ?? String(err), retryMs: wait });
      }
      await sleep(this.#clock, wait, signal);
    }
  }

  /** One pass: read the Secret, let the policy decide, issue and write if it says so, publish. */
  async sync(signal?: AbortSignal): Promise<WebhookCertificates> {
    const { client, namespace } = this.#opts;
    const opts = { namespace, ...(signal ? { signal } : {}) };
    const certs = await retryOnConflict(async () => {
      const secret = await this.#read(opts);
      const stored = secret ? fromSecret(secret) : undefined;
      const now = new Date(this.#clock.now());
      const rotation = rotationNeeded(stored, now, this.sans);
      if (!rotation) return stored as WebhookCertificates;
      const next = await renew(stored, rotation, now, this.sans);
      const data = toSecretData(next);
      if (secret) {
        // resourceVersion from the read: a replica that rotated first makes this a 409, and we re-decide.
        await client.update(Secrets, { ...secret, type: secret.type ?? "kubernetes.io/tls", data }, opts);
      } else {
        const meta = { name: this.secretName, namespace, labels: { "app.kubernetes.io/name": "classcache", "app.kubernetes.io/component": "webhook" } };
        await client.create(Secrets, { apiVersion: "v1", kind: "Secret", metadata: meta, type: "kubernetes.io/tls", data }, opts);
      }
      this.#log.info("webhook certificates issued", {
        reason: rotation.reason,
        message: rotation.message,
        secret: `${namespace}/${this.secretName}`,
        serving: fingerprint(next.certPem),
        cas: splitPem(next.caPem).length,
      });
      return next;
    }, signal ? { signal } : {});
    if (this.feed.publish(certs)) this.#log.debug("webhook certificates loaded", { serving: fingerprint(certs.certPem) });
    return certs;
  }

  async #read(opts: { namespace: string; signal?: AbortSignal }): Promise<SecretObject | undefined> {
    try {
      return await this.#opts.client.get<SecretObject>(Secrets, this.secretName, opts);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }
}

interface SecretObject extends KubeObject {
  type?: string;
  data?: Record<string, string>;
}

/** The Secret keys: tls.crt, tls.key (serving), ca.crt (bundle), ca.key (signing CA). */
export function toSecretData(c: WebhookCertificates): Record<string, string> {
  const b64 = (s: string): string => Buffer.from(s).toString("base64");
  return { "tls.crt": b64(c.certPem), "tls.key": b64(c.keyPem), "ca.crt": b64(c.caPem), "ca.key": b64(c.caKeyPem) };
}

export function fromSecret(secret: { data?: Record<string, string> }): WebhookCertificates {
  const get = (k: string): string => Buffer.from(secret.data?.[k] ?? "", "base64").toString("utf8");
  return { certPem: get("tls.crt"), keyPem: get("tls.key"), caPem: get("ca.crt"), caKeyPem: get("ca.key") };
}

export interface FileCertsOptions {
  /** Holds tls.crt, tls.key and (optionally) ca.crt, as cert-manager's Secret mounted as a volume. */
  dir: string;
  logger: Logger;
  clock?: Clock;
  /** How often the files are compared with what is loaded, default 10 s. */
  pollMs?: number;
}

/**
 * Certificates from files written by someone else (cert-manager). Read at start and whenever they
 * change; a half-written or mismatched set is ignored until it is whole again.
 */
export class FileCerts extends FeedSource<ServingCerts> implements CertSource {
  readonly name = "webhook-cert-files";
  readonly managesCaBundle = false;
  readonly #opts: FileCertsOptions;
  readonly #log: Logger;
  #lastError = "";

  constructor(opts: FileCertsOptions) {
    const log = opts.logger.with({ component: "webhook-cert-files", dir: opts.dir });
    super(log);
    this.#opts = opts;
    this.#log = log;
  }

  async start(signal: AbortSignal): Promise<void> {
    const clock = this.#opts.clock ?? realClock;
    while (!signal.aborted) {
      await this.reload();
      await sleep(clock, this.#opts.pollMs ?? 10_000, signal);
    }
  }

  /** Reads the files; publishes them when they are new and consistent. Never throws. */
  async reload(): Promise<boolean> {
    try {
      const read = (name: string): Promise<string> => readFile(join(this.#opts.dir, name), "utf8");
      const [certPem, keyPem, caPem] = await Promise.all([read("tls.crt"), read("tls.key"), read("ca.crt").catch(() => "")]);
      const leaf = splitPem(certPem)[0];
      if (!leaf) throw new Error("tls.crt holds no certificate");
      if (!new NodeX509(leaf).checkPrivateKey(createPrivateKey(keyPem))) throw new Error("tls.key does not belong to tls.crt");
      this.#lastError = "";
      const changed = this.feed.publish({ certPem, keyPem, caPem });
      if (changed) this.#log.info("webhook certificates loaded", { serving: fingerprint(leaf) });
      return changed;
    } catch (err) {
      const message = (err as Error)?.message ?? String(err);
      if (message !== this.#lastError) this.#log.warn("webhook certificate files not usable", { error: message });
      this.#lastError = message;
      return false;
    }
  }
}

/** Certificates handed over by code: set() publishes a new set. */
export class StaticCertSource extends FeedSource<ServingCerts> implements CertSource {
  readonly name = "webhook-static-certs";
  readonly managesCaBundle: boolean;

  constructor(opts: { certs?: ServingCerts; managesCaBundle?: boolean; logger: Logger }) {
    super(opts.logger);
    this.managesCaBundle = opts.managesCaBundle ?? true;
    if (opts.certs) this.feed.publish(opts.certs);
  }

  set(certs: ServingCerts): void {
    this.feed.publish(certs);
  }

  async start(signal: AbortSignal): Promise<void> {
    await aborted(signal);
  }
}
