/** `classcache inspect <key>`: a manifest, readably. */
import { shortKey } from "../archive/key.ts";
import type { Manifest } from "../archive/manifest.ts";
import { LocalStore } from "../store/store.ts";
import { usageError } from "../runtime/errors.ts";
import { defaultStore, parse, type Command } from "./command.ts";

const usage = `
usage: classcache inspect [<key>] [--store <dir>] [--json]

Shows one archive's manifest readably (or as JSON); without a key, lists the archives in the store.
`;

export const inspectCommand: Command = {
  name: "inspect",
  summary: "show an archive's manifest, or list the archives in a store",
  usage,
  async run(argv, io) {
    const { values, positionals } = parse("inspect", argv, { store: { type: "string" }, json: { type: "boolean" } }, true);
    if (positionals.length > 1) throw usageError("inspect takes at most one key");
    const store = await LocalStore.open(values.store ?? defaultStore(io.env));
    if (positionals.length === 0) {
      const ms = (await Promise.all((await store.keys()).map((k) => store.getManifest(k)))).filter((m): m is Manifest => !!m);
      if (values.json) io.stdout.write(JSON.stringify(ms.map((m) => ({ key: m.key, mode: m.mode, kind: m.archive.kind, app: m.app.source, hitRate: m.verification.hitRate, createdAt: m.createdAt })), null, 2) + "\n");
      else {
        io.stdout.write(`${"KEY".padEnd(14)}${"KIND".padEnd(6)}${"MODE".padEnd(8)}${"JDK".padEnd(6)}${"HIT".padEnd(8)}${"SIZE".padEnd(10)}APP\n`);
        for (const m of ms) {
          io.stdout.write(`${shortKey(m.key).padEnd(14)}${m.archive.kind.padEnd(6)}${m.mode.padEnd(8)}${String(m.jvm.feature).padEnd(6)}${pct(m.verification.hitRate).padEnd(8)}${mib(m.archive.size).padEnd(10)}${m.app.source}\n`);
        }
      }
      return 0;
    }
    const m = (await store.getManifest(await store.resolveKey(positionals[0]!)))!;
    io.stdout.write(values.json ? JSON.stringify(m, null, 2) + "\n" : render(m));
    return 0;
  },
};

function pct(x: number): string {
  return `${(x * 100).toFixed(1)}%`;
}
function mib(n: number): string {
  return `${(n / 1048576).toFixed(1)}MiB`;
}

export function render(m: Manifest): string {
  const v = m.verification;
  const rows: [string, string][] = [
    ["key", m.key],
    ["created", m.createdAt],
    ["archive", `${m.archive.kind === "aot" ? "AOT cache" : "dynamic CDS"}, ${mib(m.archive.size)}, sha256:${m.archive.sha256}`],
    ["mode", m.mode + (m.agent ? ` (agent ${m.agent.name}, profile ${m.agent.profile})` : "")],
    ["jvm", `${m.jvm.vendor} ${m.jvm.runtimeVersion} ${m.jvm.arch} at ${m.jvm.home}`],
    ["vm flags", Object.entries(m.inputs.vmFlags).map(([k, x]) => `${k}=${String(x)}`).join(" ")],
    ["app", `${m.app.kind} ${m.app.source} (main ${m.app.mainClass})`],
    ["layout", `layouts/${m.layout.id} (${m.layout.files.length} files, ${mib(m.layout.files.reduce((a, f) => a + f.size, 0))})`],
    ["store root", `${m.root}${m.jvm.relocatableClassPath ? " (any root works on this JDK)" : " (this JDK needs the store at this path)"}`],
    ["launch", m.runtime.launch.kind === "jar" ? `-jar {root}/${m.runtime.launch.jar}` : `-cp … ${m.runtime.launch.mainClass}`],
    ["options", m.runtime.jvmOptions.join(" ")],
    ["hit rate", `${pct(v.hitRate)} (${v.sharedClasses}/${v.totalClasses} at ready; not from the archive: ${Object.entries(v.notSharedBySource).map(([k, n]) => `${k} ${n}`).join(", ") || "none"})`],
    ["ready", `${v.readyMs} ms in the verification boot`],
    ["instrumented", v.instrumented === null ? "n/a" : v.instrumented ? `yes: ${v.evidence}` : "no"],
    ["build", `${(m.build.durationMs / 1000).toFixed(1)} s on ${m.build.host} (training ${(m.build.trainingMs / 1000).toFixed(1)} s)`],
    ...m.build.notes.map((n): [string, string] => ["note", n]),
    ...v.warnings.map((w): [string, string] => ["warning", w]),
  ];
  return rows.map(([k, x]) => `${k.padEnd(13)}${x}`).join("\n") + "\n";
}
