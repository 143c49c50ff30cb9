/**
 * An answer from the API server that was not a success, with the server's own words. Transport
 * failures (refused connections, resets, timeouts) are not ApiErrors: they keep their Node error.
 */
import type { Status } from "./types.ts";

export class ApiError extends Error {
  /** HTTP status: 404, 409, 410, 403, 422, 429, 500 ... (for watch ERROR events: the Status code). */
  readonly status: number;
  /** metav1.StatusReason: "NotFound", "AlreadyExists", "Conflict", "Expired", "Gone", "Forbidden", "Invalid" ... */
  readonly reason: string | undefined;
  /** The Status details: causes name the fields of an Invalid or an apply Conflict. */
  readonly details: Status["details"];
  /** What was asked, e.g. "PUT /api/v1/namespaces/default/configmaps/x". */
  readonly request: string | undefined;

  constructor(status: number, message: string, opts: { reason?: string; details?: Status["details"]; request?: string } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.reason = opts.reason;
    this.details = opts.details;
    this.request = opts.request;
  }

  /** From a response body: a Status when the server sent one, else the body text itself. */
  static fromResponse(status: number, body: string, request?: string): ApiError {
    const parsed = parseStatus(body);
    if (parsed) return ApiError.fromStatus(parsed, request, status);
    const text = body.trim().slice(0, 500);
    return new ApiError(status, text || `HTTP ${status}`, request === undefined ? {} : { request });
  }

  static fromStatus(s: Status, request?: string, httpStatus?: number): ApiError {
    const status = s.code ?? httpStatus ?? 500;
    return new ApiError(status, s.message ?? s.reason ?? `HTTP ${status}`, {
      ...(s.reason === undefined ? {} : { reason: s.reason }),
      ...(s.details === undefined ? {} : { details: s.details }),
      ...(request === undefined ? {} : { request }),
    });
  }
}

function parseStatus(body: string): Status | undefined {
  try {
    const v = JSON.parse(body) as Status | null;
    if (typeof v === "object" && v !== null && v.kind === "Status") return v;
  } catch {
    /* not JSON */
  }
  return undefined;
}

function hasStatus(err: unknown, status: number): boolean {
  return err instanceof ApiError && err.status === status;
}

export const isNotFound = (err: unknown): boolean => hasStatus(err, 404);
/** 409: a stale resourceVersion, an object that already exists, or an apply conflict. */
export const isConflict = (err: unknown): boolean => hasStatus(err, 409);
/** 410: the resourceVersion (or continue token) is older than what the server still has. */
export const isGone = (err: unknown): boolean => hasStatus(err, 410);
export const isForbidden = (err: unknown): boolean => hasStatus(err, 403);
export const isAlreadyExists = (err: unknown): boolean => err instanceof ApiError && err.reason === "AlreadyExists";
