/** `classcache flags <key>`: the JVM options to inject for an archive, as one JAVA_TOOL_OPTIONS value. */
import { fillRoot } from "../jvm/launch.ts";
import { toJavaToolOptions } from "../jvm/options.ts";
import { LocalStore } from "../store/store.ts";
import { usageError } from "../runtime/errors.ts";
import { defaultStore, parse, type Command } from "./command.ts";
import { runtimeOptionsOf } from "./run.ts";

const usage = `
usage: classcache flags <key> [--store <dir>] [--root <dir>] [--share-memory] [--json]

Prints the JVM options that make a workload use the archive, as one JAVA_TOOL_OPTIONS value.
They always use -Xshare:auto: a missing or stale archive costs speed, never a failed start.

  <key>            the archive key, or a unique prefix of 8+ hex digits
  --store <dir>    the store (default: $CLASSCACHE_STORE or ~/.cache/classcache/store)
  --root <dir>     the path at which the workload sees the store (default: the store's path;
                   in Kubernetes the node store is mounted at /var/lib/classcache)
  --share-memory   map the archive at a fixed address so JVMs on one node share its pages
                   (-XX:ArchiveRelocationMode=0, a diagnostic flag)
  --json           print the options as a JSON array instead
`;

export const flagsCommand: Command = {
  name: "flags",
  summary: "print the JAVA_TOOL_OPTIONS value that makes a JVM use an archive",
  usage,
  async run(argv, io) {
    const { values, positionals } = parse("flags", argv, { store: { type: "string" }, root: { type: "string" }, "share-memory": { type: "boolean" }, json: { type: "boolean" } }, true);
    if (positionals.length !== 1) throw usageError("flags takes exactly one key");
    const store = await LocalStore.open(values.store ?? defaultStore(io.env));
    const key = await store.resolveKey(positionals[0]!);
    const manifest = (await store.getManifest(key))!;
    const root = values.root ?? store.dir;
    const opts = runtimeOptionsOf(manifest, values["share-memory"] ?? false).map((o) => fillRoot(o, root));
    io.stdout.write((values.json ? JSON.stringify(opts) : toJavaToolOptions(opts)) + "\n");
    return 0;
  },
};
