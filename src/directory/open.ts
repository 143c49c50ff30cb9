/**
 * A Directory from a URL: redis://, rediss://, valkey:// or valkeys:// → Valkey; http:// or
 * https:// → a directory server (the embedded one), which needs the shared token.
 */
import { ClasscacheError, usageError } from "../runtime/errors.ts";
import type { Logger } from "../runtime/log.ts";
import type { Directory } from "./directory.ts";
import { HttpDirectory } from "./http.ts";
import { ValkeyDirectory } from "./valkey.ts";

export interface OpenDirectoryOptions {
  /** Bearer token for an http(s) directory server. */
  token?: string;
  /** Key prefix in Valkey (default "classcache:"). */
  prefix?: string;
  log?: Logger;
}

export function openDirectory(url: string, opts: OpenDirectoryOptions = {}): Directory {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  switch (scheme) {
    case "redis":
    case "rediss":
    case "valkey":
    case "valkeys":
      return new ValkeyDirectory({ url, ...(opts.prefix === undefined ? {} : { prefix: opts.prefix }), ...(opts.log ? { log: opts.log } : {}) });
    case "http":
    case "https":
      if (!opts.token) throw new ClasscacheError("input", "a directory server URL needs a token", { hint: "pass the token file the directory server was started with" });
      return new HttpDirectory({ url, token: opts.token });
    default:
      throw new ClasscacheError("input", `unsupported directory URL ${JSON.stringify(redact(url))}`, {
        hint: "use redis://:<password>@<host>:<port>/<db>, valkey://…, or the http:// address of a directory server",
      });
  }
}

/** The URL without its password, for messages and logs. */
export function redact(url: string): string {
  return url.replace(/\/\/([^/@]*):[^/@]*@/, "//$1:***@");
}

/** The directory URL with the password from a file (redis:// and valkey:// URLs carry it as userinfo). */
export function withPassword(url: string, password: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw usageError(`--directory ${redact(url)} is not a URL`);
  }
  if (!/^(redis|rediss|valkey|valkeys):$/.test(u.protocol)) throw usageError("--directory-password-file goes with a redis:// or valkey:// directory");
  u.password = encodeURIComponent(password);
  return u.toString();
}
