/**
 * The command table. A command's module is loaded only when it runs (or shows its help): the
 * pods' init step starts in a quarter of the time the whole CLI takes to load (the operator's
 * Kubernetes client, the agent's Redis client), and it runs before every patched pod's JVM.
 * index.test.ts checks each entry against the command it loads.
 */
import type { Command } from "./command.ts";

export interface CommandEntry {
  name: string;
  summary: string;
  load(): Promise<Command>;
}

export const commands: CommandEntry[] = [
  { name: "build", summary: "build, verify and store a class-data archive for an app (and agent)", load: async () => (await import("./build.ts")).buildCommand },
  { name: "flags", summary: "print the JAVA_TOOL_OPTIONS value that makes a JVM use an archive", load: async () => (await import("./flags.ts")).flagsCommand },
  { name: "run", summary: "start an app from the store with its archive, as it was verified", load: async () => (await import("./run.ts")).runCommand },
  { name: "profiles", summary: "list the built-in agent profiles and how each proves its agent instruments", load: async () => (await import("./profiles.ts")).profilesCommand },
  { name: "inspect", summary: "show an archive's manifest, or list the archives in a store", load: async () => (await import("./inspect.ts")).inspectCommand },
  { name: "node", summary: "run the per-node agent: store, peer server, puller, build coordination", load: async () => (await import("./node.ts")).nodeCommand },
  { name: "csi-node", summary: "run the CSI node plugin: a pod mounts its scope's view of the store as an inline volume", load: async () => (await import("./csinode.ts")).csiNodeCommand },
  { name: "pod-init", summary: "init step of a patched pod: point its JVM at the node's archive, or at nothing", load: async () => (await import("./podinit.ts")).podInitCommand },
  { name: "operator", summary: "run the ClassCache operator and admission webhook (together or apart)", load: async () => (await import("./operator.ts")).operatorCommand },
  { name: "stats", summary: "show archives, holders, live hit rates, memory saved and ClassCaches", load: async () => (await import("./stats.ts")).statsCommand },
  { name: "top", summary: "stats, redrawn every 2 s", load: async () => (await import("./stats.ts")).topCommand },
  { name: "keys", summary: "rotate the cluster's signing key (rotate, then retire)", load: async () => (await import("./keys.ts")).keysCommand },
  { name: "demo", summary: "the whole story on one machine: build once, pull peer-to-peer, boot from the archive", load: async () => (await import("./demo.ts")).demoCommand },
];
