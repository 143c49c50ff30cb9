/**
 * A small structured logger: constant messages, varying data in fields.
 * Loggers are passed in, never imported as globals.
 */

export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  with(fields: Fields): Logger;
}

type Level = "debug" | "info" | "warn" | "error";
const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LoggerOptions {
  level?: Level;
  /** "text" for people, "json" for machines (one object per line). */
  format?: "text" | "json";
  write?: (line: string) => void;
}

export function createLogger(opts: LoggerOptions = {}, base: Fields = {}): Logger {
  const min = order[opts.level ?? "info"];
  const format = opts.format ?? "text";
  const write = opts.write ?? ((line: string) => process.stderr.write(line + "\n"));
  const emit = (level: Level, msg: string, fields?: Fields): void => {
    if (order[level] < min) return;
    const all = { ...base, ...fields };
    if (format === "json") {
      write(JSON.stringify({ ts: new Date().toISOString(), level, msg, ...all }));
      return;
    }
    const kv = Object.entries(all)
      .map(([k, v]) => `${k}=${typeof v === "string" && !/\s/.test(v) ? v : JSON.stringify(v)}`)
      .join(" ");
    write(`${level.padEnd(5)} ${msg}${kv ? " " + kv : ""}`);
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    with: (fields) => createLogger(opts, { ...base, ...fields }),
  };
}

/** A logger that drops everything (tests, --quiet). */
export const discardLogger: Logger = createLogger({ write: () => {} });
