/** Runs the classcache CLI in-process and captures what it prints. */
import { Writable } from "node:stream";
import { main } from "../../src/cli.ts";
import { findJdk } from "../../src/jvm/jdk.ts";

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

function sink(): { stream: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(Buffer.from(chunk));
      cb();
    },
  });
  return { stream, text: () => Buffer.concat(chunks).toString("utf8") };
}

export async function cli(...argv: string[]): Promise<CliResult> {
  const out = sink();
  const err = sink();
  const code = await main(argv, { stdout: out.stream, stderr: err.stream, signal: new AbortController().signal, env: process.env });
  return { code, stdout: out.text(), stderr: err.text() };
}

/** A JDK of the given feature release, found the way users find one (JAVA_HOME, then discovery). */
export async function jdk(feature: number): Promise<string> {
  const home = await findJdk(feature);
  if (!home) throw new Error(`JDK ${feature} not found: install it under /usr/lib/jvm or set JAVA_HOME (the integration tests need JDK 17 and JDK 25)`);
  return home;
}
