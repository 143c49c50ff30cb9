/**
 * Uploading a build to the node agent: what a ClassCache's build Job does after `classcache
 * build` has built and verified an archive in its own (temporary) store. Every blob the manifest
 * names goes to the agent's socket under the operator's grant, then the manifest, signed with
 * the build's one-time key; the agent checks it and leaves it in the directory as an offer, which
 * the operator signs, publishes and binds (see createSocketServer in api.ts, operator/publish.ts).
 */
import { createReadStream } from "node:fs";
import { request } from "node:http";
import type { Manifest } from "../archive/manifest.ts";
import { signBuild, type Signer } from "../archive/signing.ts";
import { ClasscacheError } from "../runtime/errors.ts";
import type { LocalStore } from "../store/store.ts";

export interface UploadTarget {
  /** The agent's Unix socket. */
  socket: string;
  /** The operator's grant for the build's scope and ref. */
  token: string;
  ref: string;
  /** The build's one-time key (its public half is in the grant). */
  buildSigner: Signer;
}

function call(t: UploadTarget, method: string, path: string, body: NodeJS.ReadableStream | string, size: number): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: t.socket, method, path, headers: { authorization: `Bearer ${t.token}`, "content-length": size, "content-type": typeof body === "string" ? "application/json" : "application/octet-stream" } }, (res) => {
      const parts: Buffer[] = [];
      res.on("data", (c: Buffer) => parts.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(parts).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("error", (err) => reject(new ClasscacheError("input", `cannot reach the node agent at ${t.socket}: ${err.message}`, { hint: "the build Job mounts the node's agent socket; is the node agent running on this node?" })));
    if (typeof body === "string") req.end(body);
    else body.pipe(req);
  });
}

export async function uploadBuild(store: LocalStore, manifest: Manifest, t: UploadTarget): Promise<{ key: string; status: string }> {
  const blobs = new Map<string, number>([[manifest.archive.sha256, manifest.archive.size]]);
  for (const f of manifest.layout.files) blobs.set(f.sha256, f.size);
  for (const [sha, size] of blobs) {
    const r = await call(t, "PUT", `/v1/builds/${t.ref}/blobs/${sha}`, createReadStream(store.blobPath(sha)), size);
    if (r.status === 401) throw new ClasscacheError("input", "the node agent refused the build grant", { hint: "the operator makes the grant for one scope and ref, valid a while; the build Job and its Secret must be for the same ref (the agent's log says why)" });
    if (r.status !== 201) throw new ClasscacheError("input", `the node agent refused blob ${sha.slice(0, 12)}: ${r.status} ${r.text}`);
  }
  const text = signBuild(manifest, t.buildSigner);
  const r = await call(t, "POST", `/v1/builds/${t.ref}/manifest`, text, Buffer.byteLength(text));
  if (r.status !== 202) {
    const said = (() => {
      try {
        return JSON.parse(r.text) as { error?: string; hint?: string };
      } catch {
        return { error: r.text };
      }
    })();
    throw new ClasscacheError("input", `the node agent refused the manifest (${r.status}): ${said.error ?? "no reason given"}`, said.hint ? { hint: said.hint } : {});
  }
  return JSON.parse(r.text) as { key: string; status: string };
}
