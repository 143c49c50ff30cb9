/** Keys, tokens and certificates for the test kube-apiserver. */
import { generateKeyPairSync, randomBytes, X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface ApiserverCredentials {
  /** Where kube-apiserver writes its self-signed serving certificate (--cert-dir). */
  certDir: string;
  serviceAccountPublicKey: string;
  serviceAccountPrivateKey: string;
  tokenFile: string;
  adminToken: string;
}

/** Writes a service-account signing key pair and a static token file with an admin token into `pkiDir`. */
export function writeApiserverCredentials(pkiDir: string): ApiserverCredentials {
  const { publicKey, privateKey } = generateKeyPairSync("rsa", {
    modulusLength: 2048,
    publicKeyEncoding: { type: "spki", format: "pem" },
    privateKeyEncoding: { type: "pkcs8", format: "pem" },
  });
  const serviceAccountPublicKey = join(pkiDir, "sa.pub");
  const serviceAccountPrivateKey = join(pkiDir, "sa.key");
  writeFileSync(serviceAccountPublicKey, publicKey, { mode: 0o600 });
  writeFileSync(serviceAccountPrivateKey, privateKey, { mode: 0o600 });

  const adminToken = randomBytes(24).toString("hex");
  const tokenFile = join(pkiDir, "tokens.csv");
  // token,user,uid,"group1,group2"
  writeFileSync(tokenFile, `${adminToken},admin,admin,"system:masters"\n`, { mode: 0o600 });

  return { certDir: pkiDir, serviceAccountPublicKey, serviceAccountPrivateKey, tokenFile, adminToken };
}

/** The path of the certificate kube-apiserver generates in --cert-dir when given no serving cert. */
export function selfSignedCertFile(certDir: string): string {
  return join(certDir, "apiserver.crt");
}

/**
 * The CA certificate from kube-apiserver's self-signed serving cert file. The file holds the
 * serving certificate followed by the throwaway CA that signed it; only the CA is a trust anchor.
 * Returns undefined while the file is missing or still being written.
 */
export function readSelfSignedCa(certFile: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(certFile, "utf8");
  } catch {
    return undefined;
  }
  const blocks = text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  for (const pem of blocks) {
    try {
      if (new X509Certificate(pem).ca) return `${pem}\n`;
    } catch {
      return undefined;
    }
  }
  return undefined;
}
