#!/usr/bin/env node
/**
 * classcache: one binary, one subcommand per role. This file only dispatches, turns signals
 * into an AbortSignal, and turns errors into messages and exit codes (0 ok, 1 failed, 2 usage).
 */
import { writeFile } from "node:fs/promises";
import { commands } from "./cmd/index.ts";
import { ClasscacheError, exitCodeFor, formatError } from "./runtime/errors.ts";
import type { Io } from "./cmd/command.ts";

function help(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    "classcache — class-data archives for JVM fleets: built once, shared peer-to-peer, proven in use",
    "",
    "usage: classcache <command> [options]",
    "",
    "commands:",
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    "",
    "Run `classcache <command> --help` for a command's options. Add --debug to any command for stack traces.",
  ].join("\n");
}

export async function main(argv: string[], io: Io): Promise<number> {
  const debug = argv.includes("--debug");
  const args = argv.filter((a) => a !== "--debug");
  const [name, ...rest] = args;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    io.stdout.write(help() + "\n");
    return name ? 0 : 2;
  }
  if (name === "--version") {
    const { CLASSCACHE_VERSION } = await import("./build/pipeline.ts");
    io.stdout.write(`classcache ${CLASSCACHE_VERSION}\n`);
    return 0;
  }
  const entry = commands.find((c) => c.name === name);
  try {
    if (!entry) throw new ClasscacheError("usage", `unknown command "${name}"`, { hint: `commands: ${commands.map((c) => c.name).join(", ")}` });
    const cmd = await entry.load();
    if (rest.includes("--help") || rest.includes("-h")) {
      io.stdout.write(cmd.usage.trimEnd() + "\n");
      return 0;
    }
    return await cmd.run(rest, io);
  } catch (err) {
    io.stderr.write(formatError(err, debug) + "\n");
    // In a pod, the kubelet puts this file in the container's terminated state, where the
    // operator reads why a build failed (Kubernetes keeps at most 4 KiB of it).
    const terminationLog = io.env.CLASSCACHE_TERMINATION_LOG;
    if (terminationLog) await writeFile(terminationLog, formatError(err, false).slice(0, 4000) + "\n").catch(() => {});
    return exitCodeFor(err);
  }
}

if (import.meta.main) {
  const ac = new AbortController();
  let signals = 0;
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
      signals++;
      if (signals > 1) process.exit(130);
      ac.abort(new Error(`received ${sig}`));
    });
  }
  const code = await main(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, signal: ac.signal, env: process.env });
  process.exitCode = code;
}
