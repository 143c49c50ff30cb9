/** `classcache pod-init`: the init step of a patched pod (see node/podinit.ts). Always exits 0. */
import { copyFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { STORE_ROOT } from "../operator/constants.ts";
import { nodeArch } from "../util/arch.ts";
import { CHECK_JAR, jarCheckJar, planPod, stageForCheck, want, writeArgfiles } from "../node/podinit.ts";
import { parseArgs } from "node:util";
import type { Command, Io } from "./command.ts";

const usage = `
usage: classcache pod-init --ref <ref> --out <dir> --fallback <arg>... [options]

The init step the operator and the webhook add to a pod. Writes <out>/jvm.args and
<out>/launch.args: the node's verified archive for the ref if it has one, else the pod's own
launch. Never fails the pod: on any problem it writes the fallback and exits 0.

  --ref <ref>              the ClassCache's ref (64 hex digits)
  --out <dir>              where to write the argument files (an emptyDir shared with the app)
  --fallback <arg>         the container's own launch, one argument per flag (e.g. -jar, /app.jar)
  --fallback-jvm <opt>     JVM options when there is no archive (e.g. a live -javaagent)
  --store <dir>            the pod's view of the node store, read-only (default ${STORE_ROOT})
  --root <dir>             where the app container sees the store (default ${STORE_ROOT})
  --share-memory           map the archive at a fixed address so JVMs on the node share it
  --socket <path>          the node agent's socket (default <store>/run/agent.sock)
  --check                  stage the archive for the jar check that runs next in the app's image
                           (it switches to the archive only if the app's jars are the archive's)
`;

export const podInitCommand: Command = {
  name: "pod-init",
  summary: "init step of a patched pod: point its JVM at the node's archive, or at nothing",
  usage,
  async run(argv, io) {
    try {
      return await podInit(argv, io);
    } catch (err) {
      // Never block a pod: whatever went wrong, the container starts as it would without us.
      io.stderr.write(`classcache: pod-init failed, the pod runs without an archive: ${err instanceof Error ? err.message : String(err)}\n`);
      return 0;
    }
  },
};

/** How long a pod's init step waits for its node to pull a bound archive from a peer. */
const DEFAULT_WANT_WAIT_MS = 3000;

async function podInit(argv: string[], io: Io): Promise<number> {
    // Not strict: an operator newer than this image may pass a flag it does not know yet, and an
    // init step must not fail a pod over that.
    const { values } = parseArgs({ args: argv, strict: false, allowPositionals: true, options: {
      ref: { type: "string" },
      out: { type: "string" },
      fallback: { type: "string", multiple: true },
      "fallback-jvm": { type: "string", multiple: true },
      store: { type: "string", default: STORE_ROOT },
      root: { type: "string", default: STORE_ROOT },
      "share-memory": { type: "boolean", default: false },
      socket: { type: "string" },
      check: { type: "boolean", default: false },
      "wait-ms": { type: "string" },
    } });
    const str = (v: unknown, d: string): string => (typeof v === "string" ? v : d);
    const strs = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : []);
    const out = str(values.out, "/classcache");
    const fallback = strs(values.fallback);
    const fallbackJvm = strs(values["fallback-jvm"]);
    const ref = str(values.ref, "");
    const store = str(values.store, STORE_ROOT);
    await mkdir(out, { recursive: true });
    // First of all, what lets the pod start as without classcache: its own launch, and the jar
    // check the next init step runs (which must find it even when there is no archive).
    await writeArgfiles(out, { jvm: fallbackJvm, launch: fallback });
    if (values.check === true) await copyFile(await jarCheckJar(), join(out, CHECK_JAR));
    if (!/^[0-9a-f]{64}$/.test(ref)) {
      io.stderr.write(`classcache: --ref is missing or malformed; the pod runs without an archive\n`);
      return 0;
    }
    const plan = { ref, arch: nodeArch(), store, root: str(values.root, STORE_ROOT), out, fallback, fallbackJvm, shareMemory: values["share-memory"] === true };
    let r = await planPod(plan);
    if (!r.archive) {
      // Not on this node: the agent pulls it from a peer if it is bound (a second or less), and
      // the pod waits that long at most; nothing bound answers at once.
      const waitMs = Number(str(values["wait-ms"], String(DEFAULT_WANT_WAIT_MS)));
      const asked = await want(str(values.socket, `${store}/run/agent.sock`), ref, { waitMs: Number.isFinite(waitMs) ? waitMs : DEFAULT_WANT_WAIT_MS });
      if (asked === "held") r = await planPod(plan);
    }
    if (!r.archive) {
      await writeArgfiles(out, r);
      io.stdout.write(JSON.stringify({ ref, archive: false, reason: r.reason }) + "\n");
      return 0;
    }
    if (values.check !== true) {
      // A pod patched without the jar check (an older operator): the archive as it is.
      await writeArgfiles(out, r);
      io.stdout.write(JSON.stringify({ ref, archive: true, key: r.key, reason: r.reason }) + "\n");
      return 0;
    }
    const notStaged = await stageForCheck({ out, fallback, fallbackJvm }, r).catch((err: unknown) => `the jar check could not be staged: ${err instanceof Error ? err.message : String(err)}`);
    io.stdout.write(JSON.stringify({ ref, archive: false, staged: notStaged === undefined, key: r.key, reason: notStaged ?? "archive staged; the jar check in the app's image switches to it if the app's jars are the archive's" }) + "\n");
    return 0;
}
