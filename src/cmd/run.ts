/** `classcache run <key>`: start the app exactly as it was verified, from the store. */
import { refusedRuntimeOption } from "../archive/admit.ts";
import { spawn } from "node:child_process";
import { join } from "node:path";
import type { Manifest } from "../archive/manifest.ts";
import { cleanJvmEnv, fillRoot, launchArgs, viewCommand } from "../jvm/launch.ts";
import { toJavaToolOptions, withMemorySharing } from "../jvm/options.ts";
import { LocalStore } from "../store/store.ts";
import { ClasscacheError, usageError } from "../runtime/errors.ts";
import { defaultStore, parse, type Command } from "./command.ts";

const usage = `
usage: classcache run <key> [--store <dir>] [--root <dir>] [--java <JAVA_HOME>] [--share-memory] [-- <app args>]

Starts the app from the store's extracted, mtime-pinned copy, with the archive and the options
it was verified with (JAVA_TOOL_OPTIONS). App arguments after -- replace the ones it was built
with. The exit code is the JVM's.

An archive built elsewhere (a build Job's, published by the operator) names no JDK on this
machine: give the one it was built with as --java. Its workload options are then only used
if they neither load code nor run commands.
`;

export function runtimeOptionsOf(m: Manifest, shareMemory: boolean): string[] {
  return shareMemory ? withMemorySharing(m.runtime.jvmOptions) : m.runtime.jvmOptions;
}

export const runCommand: Command = {
  name: "run",
  summary: "start an app from the store with its archive, as it was verified",
  usage,
  async run(argv, io) {
    const dash = argv.indexOf("--");
    const own = dash < 0 ? argv : argv.slice(0, dash);
    const appArgs = dash < 0 ? undefined : argv.slice(dash + 1);
    const { values, positionals } = parse("run", own, { store: { type: "string" }, root: { type: "string" }, java: { type: "string" }, "share-memory": { type: "boolean" } }, true);
    if (positionals.length !== 1) throw usageError("run takes exactly one key (app arguments go after --)");
    const store = await LocalStore.open(values.store ?? defaultStore(io.env));
    const key = await store.resolveKey(positionals[0]!);
    const m = (await store.getManifest(key))!;
    const root = values.root ?? store.dir;
    if (!m.jvm.relocatableClassPath && root !== m.root) {
      io.stderr.write(`warning: this archive was built with the store at ${m.root}; JDK ${m.jvm.feature} only uses it there (pass --root ${m.root})\n`);
    }
    // A build of this machine names its JDK; one admitted from a build Job names none (admit.ts),
    // and its workload options are the uploader's: nothing of it may start a program here.
    const home = values.java ?? m.jvm.home;
    if (!home) throw usageError(`archive ${key.slice(0, 12)} was built elsewhere and names no JDK of this machine`, `pass the JDK it was built with (${m.jvm.vendor} ${m.jvm.runtimeVersion}) as --java <JAVA_HOME>`);
    if (!m.jvm.home) {
      const refused = m.inputs.jvmOptions.filter((o) => refusedRuntimeOption(o) !== undefined);
      if (refused.length) throw usageError(`archive ${key.slice(0, 12)} was built elsewhere with JVM options that load code, run commands or name files: ${refused.join(" ")}`, "start it the way its workload does instead");
    }
    const java = join(home, "bin", "java");
    const args = [...m.inputs.jvmOptions, ...launchArgs(m.runtime.launch, root), ...(appArgs ?? m.runtime.appArgs)];
    const cmd = viewCommand(java, args, { store: store.dir, root, readOnly: true });
    const env = cleanJvmEnv({ JAVA_TOOL_OPTIONS: toJavaToolOptions(runtimeOptionsOf(m, values["share-memory"] ?? false).map((o) => fillRoot(o, root))) });
    const child = spawn(cmd.command, cmd.args, { stdio: "inherit", env });
    const onAbort = () => child.kill("SIGTERM");
    io.signal.addEventListener("abort", onAbort);
    return new Promise<number>((resolve, reject) => {
      child.on("error", (err) => reject(new ClasscacheError("input", `cannot start ${java}`, { hint: "the JDK the archive was built with must still be installed", cause: err })));
      child.on("exit", (code, signal) => {
        io.signal.removeEventListener("abort", onAbort);
        resolve(code ?? (signal === "SIGTERM" || signal === "SIGINT" ? 0 : 1));
      });
    });
  },
};
