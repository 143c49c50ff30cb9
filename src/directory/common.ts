/**
 * What the directory implementations share: event ids, limits and input checks.
 */
import { ClasscacheError } from "../runtime/errors.ts";
import type { BuildFailure, DirectoryEvent, Holder, HolderUsage } from "./directory.ts";

/**
 * The name under which a node leaves a build's offer for one ref and arch (a build Job's
 * manifest, signed with its one-time key, and its grant) until the operator judges it.
 */
export function offerName(ref: string, arch: string): string {
  return `offer/${ref}.${arch}`;
}

/** Most events one readEvents call returns; call again (after the last id) for more. */
export const READ_COUNT = 1000;
/** Events retained in the stream (Valkey trims approximately, to at least this many). */
export const MAX_EVENTS = 10_000;

/** An event id split into its parts: `<ms>-<seq>`, the shape of a Valkey stream id. */
export interface EventId {
  ms: number;
  seq: number;
}

const ID_PATTERN = /^(\d{1,16})(?:-(\d{1,16}))?$/;

/** Parses "0", "<ms>" or "<ms>-<seq>"; throws on anything else. */
export function parseEventId(id: string): EventId {
  const m = ID_PATTERN.exec(id);
  if (!m) throw new ClasscacheError("internal", `not an event id: ${JSON.stringify(id)} (expected <ms>-<seq>, or "0")`);
  return { ms: Number(m[1]), seq: m[2] === undefined ? 0 : Number(m[2]) };
}

export function formatEventId(id: EventId): string {
  return `${id.ms}-${id.seq}`;
}

export function compareEventIds(a: EventId, b: EventId): number {
  return a.ms !== b.ms ? a.ms - b.ms : a.seq - b.seq;
}

/** Holders in a stable order (by node name), whatever order the backend keeps them in. */
export function sortHolders(holders: Holder[]): Holder[] {
  return holders.sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
}

/** A holder with exactly the contract's fields, in this order (`complete` only when false, `usage` only when valid). */
export function normalizeHolder(h: Holder): Holder {
  const out: Holder = h.complete === false ? { node: h.node, url: h.url, zone: h.zone, complete: false } : { node: h.node, url: h.url, zone: h.zone };
  const u = h.usage;
  const count = (n: unknown): n is number => typeof n === "number" && Number.isInteger(n) && n >= 0;
  if (u && count(u.jvms) && count(u.sharedClasses) && count(u.loadedClasses)) {
    out.usage = { jvms: u.jvms, sharedClasses: u.sharedClasses, loadedClasses: u.loadedClasses };
    // Memory is optional (an agent that cannot read smaps sends none), but all four or nothing.
    if (count(u.rssKb) && count(u.pssKb) && count(u.roRssKb) && count(u.roPssKb)) Object.assign(out.usage, { rssKb: u.rssKb, pssKb: u.pssKb, roRssKb: u.roRssKb, roPssKb: u.roPssKb });
  }
  return out;
}

/** The holders' usage, summed: the JVMs that map the archive and their class counts. */
export function sumClassUsage(holders: Holder[]): Pick<HolderUsage, "jvms" | "sharedClasses" | "loadedClasses"> {
  const sum = { jvms: 0, sharedClasses: 0, loadedClasses: 0 };
  for (const u of holders.map((h) => h.usage)) {
    if (!u) continue;
    sum.jvms += u.jvms;
    sum.sharedClasses += u.sharedClasses;
    sum.loadedClasses += u.loadedClasses;
  }
  return sum;
}

/** A holder as stored: normalized, so equal holders serialize equally. */
export function holderJson(h: Holder): string {
  return JSON.stringify(normalizeHolder(h));
}

export function isHolder(v: unknown): v is Holder {
  if (typeof v !== "object" || v === null) return false;
  const o = v as Record<string, unknown>;
  return typeof o["node"] === "string" && typeof o["url"] === "string" && typeof o["zone"] === "string";
}

export function isBuildFailure(v: unknown): v is BuildFailure {
  if (typeof v !== "object" || v === null) return false;
  const o = v as Record<string, unknown>;
  return (
    typeof o["node"] === "string" &&
    typeof o["message"] === "string" &&
    typeof o["attempts"] === "number" &&
    typeof o["retryAt"] === "number"
  );
}

export function isDirectoryEvent(v: unknown): v is DirectoryEvent {
  if (typeof v !== "object" || v === null) return false;
  const o = v as Record<string, unknown>;
  return typeof o["type"] === "string" && typeof o["key"] === "string" && typeof o["node"] === "string";
}

/** Keys, owners and node names: non-empty, no control characters (they end up in key names and logs). */
export function checkName(what: string, value: string): void {
  // eslint-disable-next-line no-control-regex
  if (typeof value !== "string" || value === "" || /[\u0000-\u001f\u007f]/.test(value)) {
    throw new ClasscacheError("internal", `invalid ${what}: ${JSON.stringify(value)}`);
  }
}

export function checkTtl(ttlMs: number): void {
  if (!Number.isSafeInteger(ttlMs) || ttlMs <= 0) throw new ClasscacheError("internal", `invalid TTL: ${ttlMs} ms (a positive integer)`);
}

/** Resolves after `ms`, or at once when `signal` aborts; never rejects. */
export function sleepUnlessAborted(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted || ms <= 0) {
      resolve();
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
