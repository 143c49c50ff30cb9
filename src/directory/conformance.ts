/**
 * The conformance suite every Directory implementation passes. Each test gets a fresh, empty
 * backend from `make`. With `advance`, expiry is tested by moving the implementation's clock;
 * without it, by waiting out short TTLs in real time (so the same tests run against Valkey).
 * `other`, when given, is a second client of the same backend (a second connection, a second
 * HTTP client): the tests use it where one client must see what another did.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { compareEventIds, parseEventId } from "./common.ts";
import type { BuildFailure, Directory, DirectoryEvent, Holder } from "./directory.ts";

export interface DirectoryFixture {
  dir: Directory;
  /** A second client of the same backend (defaults to `dir`). */
  other?: Directory;
  /** Moves the implementation's clock forward; real time passes when absent. */
  advance?(ms: number): void;
  cleanup(): Promise<void>;
}

/** Base TTL of the expiry tests (real time when there is no clock to advance). */
const T = 400;

interface Ctx {
  dir: Directory;
  other: Directory;
  /** Lets `ms` pass: on the fake clock if there is one, else in real time. */
  pass: (ms: number) => Promise<void>;
}

const h = (node: string, zone = "zone-a"): Holder => ({ node, url: `http://${node}.test:7071`, zone });
const published = (key: string, node = "n1"): DirectoryEvent => ({ type: "published", key, node });

export function directoryConformance(name: string, make: () => Promise<DirectoryFixture>): void {
  const test = (title: string, body: (c: Ctx) => Promise<void>): void => {
    it(title, async () => {
      const f = await make();
      try {
        const pass = async (ms: number): Promise<void> => {
          if (f.advance) f.advance(ms);
          else await sleep(ms);
        };
        await body({ dir: f.dir, other: f.other ?? f.dir, pass });
      } finally {
        await f.cleanup();
      }
    });
  };

  describe(`${name} directory conformance`, () => {
    test("the first publish of a key wins and later ones get the manifest in force", async ({ dir, other }) => {
      assert.deepEqual(await dir.publish("k1", "envelope-a"), { published: true, envelope: "envelope-a" });
      assert.deepEqual(await other.publish("k1", "envelope-b"), { published: false, envelope: "envelope-a" });
      assert.equal(await other.manifest("k1"), "envelope-a");
      assert.equal(await dir.manifest("missing"), undefined);
      await other.publish("k0", "envelope-c");
      assert.deepEqual(await dir.keys(), ["k0", "k1"]);
    });

    test("a manifest is replaced only while it is the one expected", async ({ dir, other }) => {
      assert.equal(await dir.replaceManifest("k", "envelope-a", "envelope-b"), false, "nothing to replace");
      assert.equal(await dir.manifest("k"), undefined);
      await dir.publish("k", "envelope-a");
      assert.equal(await other.replaceManifest("k", "envelope-x", "envelope-b"), false, "not the one in force");
      assert.equal(await other.replaceManifest("k", "envelope-a", "envelope-b"), true);
      assert.equal(await dir.manifest("k"), "envelope-b");
      assert.equal(await dir.replaceManifest("k", "envelope-a", "envelope-c"), false, "a stale expectation loses");
    });

    test("the first bind of a name wins; unbind removes it and is not a key", async ({ dir, other }) => {
      assert.equal(await dir.bind("ref-a.amd64", "binding-1"), "binding-1");
      assert.equal(await other.bind("ref-a.amd64", "binding-2"), "binding-1");
      assert.equal(await other.binding("ref-a.amd64"), "binding-1");
      assert.equal(await dir.binding("ref-b.amd64"), undefined);
      assert.deepEqual(await dir.keys(), []);
      await other.unbind("ref-a.amd64");
      assert.equal(await dir.binding("ref-a.amd64"), undefined);
      assert.equal(await dir.bind("ref-a.amd64", "binding-3"), "binding-3");
    });

    test("a publish under the lease in force succeeds", async ({ dir }) => {
      const lease = await dir.acquireLease("k", "builder-a", 10 * T);
      assert.ok(lease);
      assert.deepEqual(await dir.publish("k", "envelope-a", lease), { published: true, envelope: "envelope-a" });
      assert.equal(await dir.manifest("k"), "envelope-a");
    });

    test("a publish with an expired lease is refused", async ({ dir, pass }) => {
      const lease = await dir.acquireLease("k", "builder-a", T);
      assert.ok(lease);
      await pass(T + 150);
      assert.deepEqual(await dir.publish("k", "envelope-a", lease), { published: false, envelope: undefined });
      assert.equal(await dir.manifest("k"), undefined);
    });

    test("a publish with a superseded or forged token is refused", async ({ dir, other, pass }) => {
      const first = await dir.acquireLease("k", "builder-a", T);
      assert.ok(first);
      await pass(T + 150);
      const second = await other.acquireLease("k", "builder-b", 10 * T);
      assert.ok(second);
      assert.ok(second.token > first.token);
      assert.equal((await dir.publish("k", "stale", first)).published, false);
      assert.equal((await other.publish("k", "forged", { ...second, token: second.token + 1 })).published, false);
      assert.equal((await other.publish("k", "forged", { ...second, owner: "builder-a" })).published, false);
      assert.equal(await dir.manifest("k"), undefined);
      assert.deepEqual(await other.publish("k", "fresh", second), { published: true, envelope: "fresh" });
      // Once published, any later publish (with or without a lease) gets the manifest in force.
      assert.deepEqual(await dir.publish("k", "late", first), { published: false, envelope: "fresh" });
    });

    test("a lease is exclusive until released and its tokens strictly increase", async ({ dir, other }) => {
      const a = await dir.acquireLease("k", "node-a", 10 * T);
      assert.ok(a);
      assert.deepEqual({ key: a.key, owner: a.owner }, { key: "k", owner: "node-a" });
      assert.equal(await other.acquireLease("k", "node-b", 10 * T), undefined);
      assert.equal(await dir.acquireLease("k", "node-a", 10 * T), undefined, "not even the same owner gets it twice");
      assert.equal(await other.leaseOwner("k"), "node-a");
      assert.equal(await other.releaseLease(a), true);
      assert.equal(await dir.leaseOwner("k"), undefined);
      const b = await other.acquireLease("k", "node-b", 10 * T);
      assert.ok(b);
      assert.ok(b.token > a.token, `token ${b.token} after ${a.token}`);
      assert.equal(await dir.releaseLease(b), true);
      const c = await dir.acquireLease("k", "node-a", 10 * T);
      assert.ok(c && c.token > b.token);
      // Other keys have leases of their own.
      assert.ok(await other.acquireLease("another", "node-b", 10 * T));
    });

    test("only the holder renews or releases a lease", async ({ dir, other }) => {
      const lease = await dir.acquireLease("k", "node-a", 10 * T);
      assert.ok(lease);
      for (const impostor of [{ ...lease, owner: "node-b" }, { ...lease, token: lease.token + 1 }, { ...lease, token: lease.token - 1 }]) {
        assert.equal(await other.renewLease(impostor, 10 * T), false);
        assert.equal(await other.releaseLease(impostor), false);
      }
      assert.equal(await dir.leaseOwner("k"), "node-a");
      assert.equal(await dir.renewLease(lease, 10 * T), true);
      assert.equal(await dir.releaseLease(lease), true);
      assert.equal(await dir.releaseLease(lease), false, "a released lease cannot be released again");
      assert.equal(await dir.renewLease(lease, 10 * T), false, "nor renewed");
    });

    test("a renewed lease outlives its first TTL, and an expired one can be taken by someone else", async ({ dir, other, pass }) => {
      const lease = await dir.acquireLease("k", "node-a", T);
      assert.ok(lease);
      await pass(T / 2);
      assert.equal(await dir.renewLease(lease, 2 * T), true);
      await pass(T); // past the first TTL, within the renewed one
      assert.equal(await other.leaseOwner("k"), "node-a");
      assert.equal(await other.acquireLease("k", "node-b", T), undefined);
      await pass(T + 200); // past the renewed TTL
      assert.equal(await other.leaseOwner("k"), undefined);
      assert.equal(await dir.renewLease(lease, T), false, "an expired lease cannot be renewed");
      const taken = await other.acquireLease("k", "node-b", 10 * T);
      assert.ok(taken);
      assert.ok(taken.token > lease.token);
      assert.equal(await dir.releaseLease(lease), false);
      assert.equal(await dir.leaseOwner("k"), "node-b");
    });

    test("holders expire unless re-announced, and withdraw removes one", async ({ dir, other, pass }) => {
      await dir.announce("k", h("n1"), T);
      await other.announce("k", h("n2", "zone-b"), T);
      assert.deepEqual(await dir.holders("k"), [h("n1"), h("n2", "zone-b")]);
      await pass(T / 2);
      await dir.announce("k", h("n1"), T);
      await pass(T / 2 + 100); // n2 is past its TTL, n1's refresh is not
      assert.deepEqual(await other.holders("k"), [h("n1")]);
      await other.withdraw("k", "n1");
      assert.deepEqual(await dir.holders("k"), []);
      await dir.withdraw("k", "nobody"); // withdrawing what is not there is fine
      assert.deepEqual(await dir.holders("missing"), []);
    });

    test("re-announcing replaces a node's entry", async ({ dir, other }) => {
      await dir.announce("k", h("n1"), 10 * T);
      await other.announce("k", { node: "n1", url: "http://10.0.0.9:7071", zone: "zone-c" }, 10 * T);
      await dir.announce("k", h("n2"), 10 * T);
      assert.deepEqual(await dir.holders("k"), [{ node: "n1", url: "http://10.0.0.9:7071", zone: "zone-c" }, h("n2")]);
      assert.deepEqual(await dir.holders("other-key"), []);
    });

    test("a holder carries the usage of the archive on its node, and only well-formed usage", async ({ dir, other }) => {
      const usage = { jvms: 2, sharedClasses: 18_000, loadedClasses: 18_600, rssKb: 60_000, pssKb: 36_000, roRssKb: 40_000, roPssKb: 20_000 };
      await dir.announce("k", { ...h("n1"), usage }, 10 * T);
      await dir.announce("k", { ...h("n2"), usage: { jvms: -1, sharedClasses: 1, loadedClasses: 1 } }, 10 * T);
      await dir.announce("k", { ...h("n3"), usage: { jvms: 1, sharedClasses: 1, loadedClasses: 1, rssKb: 5, pssKb: -1, roRssKb: 1, roPssKb: 1 } }, 10 * T);
      assert.deepEqual(await other.holders("k"), [{ ...h("n1"), usage }, h("n2"), { ...h("n3"), usage: { jvms: 1, sharedClasses: 1, loadedClasses: 1 } }]);
    });

    test("a failure record is visible until it expires or is cleared", async ({ dir, other, pass }) => {
      const failure: BuildFailure = { node: "n1", message: "training JVM crashed", attempts: 2, retryAt: 1_900_000_000_000 };
      assert.equal(await dir.failure("k"), undefined);
      await dir.recordFailure("k", failure, T);
      assert.deepEqual(await other.failure("k"), failure);
      await pass(T + 150);
      assert.equal(await other.failure("k"), undefined);
      await dir.recordFailure("k", { ...failure, attempts: 3 }, 10 * T);
      assert.equal((await dir.failure("k"))?.attempts, 3);
      await other.clearFailure("k");
      assert.equal(await dir.failure("k"), undefined);
    });

    test("remove clears a key's manifest, holders, lease and failure, and tokens keep increasing", async ({ dir, other }) => {
      const lease = await dir.acquireLease("k", "n1", 10 * T);
      assert.ok(lease);
      await dir.publish("k", "envelope-a", lease);
      await dir.publish("kept", "envelope-b");
      await dir.announce("k", h("n1"), 10 * T);
      await dir.recordFailure("k", { node: "n2", message: "x", attempts: 1, retryAt: 0 }, 10 * T);
      await other.remove("k");
      assert.equal(await dir.manifest("k"), undefined);
      assert.deepEqual(await dir.holders("k"), []);
      assert.equal(await dir.leaseOwner("k"), undefined);
      assert.equal(await dir.failure("k"), undefined);
      assert.deepEqual(await dir.keys(), ["kept"]);
      const next = await other.acquireLease("k", "n2", 10 * T);
      assert.ok(next && next.token > lease.token, "fencing tokens survive remove()");
      assert.equal((await other.publish("k", "envelope-c", next)).published, true);
      await dir.remove("never-there");
    });

    test("events are ordered and readEvents(after) returns only later events", async ({ dir, other }) => {
      assert.equal(await dir.lastEventId(), "0");
      assert.deepEqual(await dir.readEvents("0", 0), []);
      const events: DirectoryEvent[] = [
        { type: "build-started", key: "k", node: "n1", token: 1 },
        { type: "build-failed", key: "k", node: "n1", message: "boom", retryAt: 123 },
        { type: "published", key: "k", node: "n2" },
        { type: "pulled", key: "k", node: "n3", from: ["n2"], bytes: 1024, ms: 12 },
        { type: "lease-released", key: "k", node: "n2" },
        { type: "removed", key: "k", node: "n3" },
      ];
      const ids: string[] = [];
      for (const [i, e] of events.entries()) ids.push(await (i % 2 === 0 ? dir : other).emit(e));
      for (let i = 1; i < ids.length; i++) assert.ok(compareEventIds(parseEventId(ids[i - 1]!), parseEventId(ids[i]!)) < 0, `${ids[i - 1]} < ${ids[i]}`);
      assert.equal(await other.lastEventId(), ids.at(-1));

      const all = await other.readEvents("0", 0);
      assert.deepEqual(all.map((r) => r.id), ids);
      assert.deepEqual(all.map((r) => r.event), events);
      for (const r of all) assert.ok(Number.isFinite(r.time) && r.time > 0);
      const later = await dir.readEvents(ids[2]!, 1000);
      assert.deepEqual(later.map((r) => r.event), events.slice(3));
      assert.deepEqual(await dir.readEvents(ids.at(-1)!, 0), []);
    });

    test("a blocked reader wakes when another client emits an event", async ({ dir, other }) => {
      await dir.emit(published("before"));
      const after = await dir.lastEventId();
      const t0 = Date.now();
      const reading = dir.readEvents(after, 10_000);
      await sleep(150);
      const id = await other.emit(published("k", "n2"));
      const got = await reading;
      assert.deepEqual(got.map((r) => [r.id, r.event]), [[id, published("k", "n2")]]);
      assert.ok(Date.now() - t0 < 3_000, `woke after ${Date.now() - t0} ms`);
      // Several readers at once all wake.
      const readers = [dir.readEvents(id, 10_000), other.readEvents(id, 10_000), dir.readEvents(id, 10_000)];
      await sleep(150);
      await dir.emit(published("k2"));
      for (const r of await Promise.all(readers)) assert.deepEqual(r.map((e) => e.event), [published("k2")]);
    });

    test("a blocked read with nothing to read times out with []", async ({ dir }) => {
      await dir.emit(published("k"));
      const after = await dir.lastEventId();
      const t0 = Date.now();
      assert.deepEqual(await dir.readEvents(after, 300), []);
      const ms = Date.now() - t0;
      assert.ok(ms >= 250 && ms < 2_000, `returned after ${ms} ms`);
    });

    test("a blocked read returns [] promptly when aborted, and reading goes on afterwards", async ({ dir, other }) => {
      const after = await dir.lastEventId();
      const ac = new AbortController();
      const t0 = Date.now();
      const reading = dir.readEvents(after, 20_000, ac.signal);
      await sleep(150);
      ac.abort();
      assert.deepEqual(await reading, []);
      assert.ok(Date.now() - t0 < 1_500, `returned ${Date.now() - t0} ms after starting`);
      assert.deepEqual(await dir.readEvents(after, 20_000, AbortSignal.abort()), [], "an aborted signal returns at once");
      // The directory still serves blocking reads, and events emitted meanwhile are not lost.
      const id = await other.emit(published("k"));
      assert.deepEqual((await dir.readEvents(after, 5_000)).map((r) => r.id), [id]);
      const next = dir.readEvents(id, 10_000);
      await sleep(100);
      await other.emit(published("k2"));
      assert.deepEqual((await next).map((r) => r.event), [published("k2")]);
    });

    test("ping reports a reachable directory", async ({ dir, other }) => {
      assert.equal(await dir.ping(), true);
      assert.equal(await other.ping(), true);
    });
  });
}
