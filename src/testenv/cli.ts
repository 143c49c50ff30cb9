/**
 * Starts or stops a test kube-apiserver + etcd that keeps running in the background.
 *
 *   node src/testenv/cli.ts up <dir> [manifest.yaml...]   prints the kubeconfig path
 *   node src/testenv/cli.ts down <dir>
 *
 * Without manifests, `up` applies the project's own: every *.yaml under deploy/crds/ and
 * deploy/rbac/ (directories that do not exist are skipped).
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { defaultManifestFiles } from "./manifests.ts";
import { isAlive, pidRuns, stopProcessGroup } from "./processes.ts";
import { REPO_ROOT, startTestEnv } from "./testenv.ts";

interface PidFile {
  etcd: number;
  kubeApiserver: number;
  server: string;
  kubeconfig: string;
}

const BINARY_OF: Record<"etcd" | "kubeApiserver", string> = { etcd: "etcd", kubeApiserver: "kube-apiserver" };

function pidFilePath(dir: string): string {
  return join(dir, "pids.json");
}

function readPidFile(dir: string): PidFile | undefined {
  const path = pidFilePath(dir);
  if (!existsSync(path)) return undefined;
  return JSON.parse(readFileSync(path, "utf8")) as PidFile;
}

/** Pids from the file that still run the binary they were started as (a recycled pid is left alone). */
function livePids(pids: PidFile): { name: string; pid: number }[] {
  return (["kubeApiserver", "etcd"] as const)
    .map((k) => ({ name: BINARY_OF[k], pid: pids[k] }))
    .filter(({ name, pid }) => isAlive(pid) && pidRuns(pid, name));
}

async function up(dirArg: string, manifestArgs: string[]): Promise<void> {
  const dir = resolve(dirArg);
  const previous = readPidFile(dir);
  if (previous && livePids(previous).length > 0) {
    throw new Error(`a test environment is already running in ${dir}; run "down ${dirArg}" first`);
  }
  const manifests = manifestArgs.length > 0 ? manifestArgs.map((m) => resolve(m)) : defaultManifestFiles(REPO_ROOT);
  const env = await startTestEnv({ dir, manifests, log: (line) => process.stderr.write(`${line}\n`) });
  env.detach();
  const pids: PidFile = { ...env.pids, server: env.server, kubeconfig: env.kubeconfigPath };
  writeFileSync(pidFilePath(dir), `${JSON.stringify(pids, null, 2)}\n`);
  process.stdout.write(`${env.kubeconfigPath}\n`);
}

async function down(dirArg: string): Promise<void> {
  const dir = resolve(dirArg);
  const pids = readPidFile(dir);
  if (!pids) {
    process.stderr.write(`no ${pidFilePath(dir)}: nothing to stop\n`);
    return;
  }
  for (const { name, pid } of livePids(pids)) {
    await stopProcessGroup(pid);
    process.stderr.write(`stopped ${name} (pid ${pid})\n`);
  }
  rmSync(pidFilePath(dir), { force: true });
}

const USAGE = "usage: node src/testenv/cli.ts up <dir> [manifest.yaml...] | down <dir>";

async function main(argv: string[]): Promise<number> {
  const [command, dir, ...rest] = argv;
  if (command === "up" && dir) {
    await up(dir, rest);
    return 0;
  }
  if (command === "down" && dir && rest.length === 0) {
    await down(dir);
    return 0;
  }
  process.stderr.write(`${USAGE}\n`);
  return 2;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
