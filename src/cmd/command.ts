/** The shape of a subcommand: a name, a one-line summary, its usage text, and run(). */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { usageError } from "../runtime/errors.ts";

export interface Io {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
  signal: AbortSignal;
  env: NodeJS.ProcessEnv;
}

export interface Command {
  name: string;
  summary: string;
  usage: string;
  run(argv: string[], io: Io): Promise<number>;
}

type Options = NonNullable<ParseArgsConfig["options"]>;

/** node:util parseArgs, with its errors turned into usage errors that point at --help. */
export function parse<T extends Options>(cmd: string, argv: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (err) {
    throw usageError((err as Error).message, `see \`classcache ${cmd} --help\`; a value that starts with "-" needs "=", e.g. --jvm-opt=-Xmx512m`);
  }
}

/** The default store: $CLASSCACHE_STORE, else ~/.cache/classcache/store. */
export function defaultStore(env: NodeJS.ProcessEnv): string {
  if (env.CLASSCACHE_STORE) return env.CLASSCACHE_STORE;
  const base = env.XDG_CACHE_HOME ?? `${env.HOME ?? "/tmp"}/.cache`;
  return `${base}/classcache/store`;
}
