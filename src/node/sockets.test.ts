import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import { generateSigningKey, signBinding, signerFromPem, trustStoreFromPems } from "../archive/signing.ts";
import { MemoryDirectory } from "../directory/memory.ts";
import { memoryLogger } from "../p2p/testing.ts";
import { sha256Hex } from "../util/hash.ts";
import { nodeArch, type NodeAgent } from "./agent.ts";
import { createScopeSocketServer, Wants } from "./api.ts";
import { want } from "./podinit.ts";
import { ScopeSockets, scopeSocketPath } from "./sockets.ts";

async function eventually(what: string, check: () => Promise<boolean> | boolean, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

describe("the agent's sockets in the scopes' views", () => {
  let dir: string;
  let directory: MemoryDirectory;
  const stop = new AbortController();
  let running: Promise<void>;
  let sockets: ScopeSockets;
  const ensured: string[] = [];
  const { log, lines } = memoryLogger();
  const shopRef = sha256Hex("ref of shop");

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-sockets-"));
    directory = new MemoryDirectory();
    const key = generateSigningKey();
    const signer = signerFromPem(key.privatePem);
    await directory.bind(`${shopRef}.${nodeArch()}`, signBinding({ scope: "shop", ref: shopRef, arch: nodeArch(), key: "f".repeat(64), owner: "uid", issuedAt: 1 }, signer));
    // The agent as Wants uses it: its directory and trust, and ensure.
    const agent = { opts: { directory, trust: trustStoreFromPems([key.publicPem]), log }, ensure: ({ ref }: { ref: string }) => Promise.resolve(void ensured.push(ref)) } as unknown as NodeAgent;
    const wants = new Wants(agent);
    for (const name of ["shop", "rival", "_cluster", "Not_A_Namespace"]) await mkdir(join(dir, "scopes", name), { recursive: true });
    sockets = new ScopeSockets(dir, (scope) => createScopeSocketServer(wants, scope), log);
    running = sockets.start(stop.signal);
    await eventually("the first scan", () => sockets.listening.length === 3);
  });

  after(async () => {
    stop.abort();
    await running;
    await directory.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("listens in every scope's view, for views made later too, and again where its socket went away", async () => {
    assert.deepEqual(sockets.listening, ["_cluster", "rival", "shop"], "not in a directory no scope has");
    await mkdir(join(dir, "scopes", "late"));
    await eventually("a socket in a view made later (the watch)", async () => (await stat(scopeSocketPath(dir, "late")).catch(() => undefined))?.isSocket() === true);
    await rm(scopeSocketPath(dir, "rival"));
    await sockets.scan();
    assert.ok((await stat(scopeSocketPath(dir, "rival"))).isSocket());
    assert.equal((await stat(scopeSocketPath(dir, "shop"))).mode & 0o777, 0o666, "any pod user may connect");
  });

  it("fetches a ref wanted through its own scope's socket, and refuses one wanted through another scope's", async () => {
    assert.equal(await want(scopeSocketPath(dir, "rival"), shopRef), "wanted", "accepted, as every want is");
    await eventually("the refusal", () => lines.some((l) => l.msg === "want refused" && l.scope === "rival"));
    assert.deepEqual(ensured, [], "another scope's pod cannot make the node fetch shop's archive");
    assert.equal(await want(scopeSocketPath(dir, "shop"), shopRef), "wanted");
    await eventually("the fetch", () => ensured.length === 1);
    assert.deepEqual(ensured, [shopRef]);
  });
});
