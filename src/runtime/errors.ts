/**
 * Errors that reach the user. A ClasscacheError says what went wrong and what to do;
 * the CLI prints it without a stack (unless --debug) and exits non-zero.
 */

export type ErrorCode =
  | "usage" // the command line was wrong: exit 2
  | "input" // the app, agent, profile or JDK given cannot be used
  | "training" // the training JVM failed, crashed or hung
  | "verification" // the JVM rejected the archive or did not use it
  | "store" // the store cannot be written (permissions, space) or is inconsistent
  | "not-found" // no archive/manifest for a key
  | "internal";

export class ClasscacheError extends Error {
  readonly code: ErrorCode;
  /** What the user can do about it. */
  readonly hint: string | undefined;
  /** Extra lines (e.g. the tail of a JVM log) shown under the message. */
  readonly details: string | undefined;

  constructor(code: ErrorCode, message: string, opts: { hint?: string; details?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = "ClasscacheError";
    this.code = code;
    this.hint = opts.hint;
    this.details = opts.details;
  }
}

export function usageError(message: string, hint?: string): ClasscacheError {
  return new ClasscacheError("usage", message, hint === undefined ? {} : { hint });
}

export function exitCodeFor(err: unknown): number {
  if (err instanceof ClasscacheError) return err.code === "usage" ? 2 : 1;
  return 1;
}

/** Renders an error for a terminal: message, details, hint, then the cause chain (stack only with debug). */
export function formatError(err: unknown, debug: boolean): string {
  const lines: string[] = [];
  if (err instanceof ClasscacheError) {
    lines.push(`error: ${err.message}`);
    if (err.details) lines.push(...err.details.trimEnd().split("\n").map((l) => `  ${l}`));
    if (err.hint) lines.push(`hint: ${err.hint}`);
  } else if (err instanceof Error) {
    lines.push(`error: ${err.message}`);
  } else {
    lines.push(`error: ${String(err)}`);
  }
  let cause = err instanceof Error ? err.cause : undefined;
  while (cause !== undefined) {
    lines.push(`cause: ${cause instanceof Error ? cause.message : JSON.stringify(cause)}`);
    cause = cause instanceof Error ? cause.cause : undefined;
  }
  if (debug && err instanceof Error && err.stack) lines.push(err.stack);
  return lines.join("\n");
}
