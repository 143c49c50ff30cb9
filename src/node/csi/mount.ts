/**
 * How the CSI plugin mounts: the Mounter contract, and its one real implementation, which runs
 * the node's own `mount` and `umount` (util-linux or busybox; no shell, a timeout on each) and
 * reads /proc/self/mountinfo to tell whether a path is a mount point.
 *
 * Read-only before it is visible: the target lies under the kubelet's directory, mounted into
 * the plugin with Bidirectional propagation, so a mount there is copied at once to the host's
 * mount namespace — with the flags it has at that moment. A remount (`-o remount,bind,ro`) is
 * not propagated: binding at the target and then remounting it read-only would leave the host's
 * copy, the one the kubelet gives the pod, writable. So the source is bound and made read-only
 * at a private staging directory first, and that read-only mount is bound at the target (a bind
 * copies the flags of the mount it binds); the staging mount is then removed.
 */
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, realpath, rmdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { ClasscacheError } from "../../runtime/errors.ts";

export interface Mounter {
  /** Binds `source` at `target` read-only (nosuid, nodev); leaves nothing mounted when it fails. */
  bindReadOnly(source: string, target: string): Promise<void>;
  /** Unmounts the topmost mount at `target`. */
  unmount(target: string): Promise<void>;
  /** True when `target` (after resolving symlinks) is a mount point; false when it does not exist. */
  isMountPoint(target: string): Promise<boolean>;
}

/** mountinfo escapes space, tab, newline and backslash as \ooo (octal). */
export function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export interface MountEntry {
  /** Field 5, unescaped. */
  mountPoint: string;
  /** Field 6, the per-mount options (ro or rw, nosuid, nodev, …). */
  options: string[];
}

/** The entries of a /proc/<pid>/mountinfo text, in its order (a later mount at a path is on top). */
export function parseMountinfo(mountinfo: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of mountinfo.split("\n")) {
    const fields = line.split(" ");
    if (fields[4] !== undefined && fields[5] !== undefined) entries.push({ mountPoint: unescapeMountinfo(fields[4]), options: fields[5].split(",") });
  }
  return entries;
}

const run = promisify(execFile);

export interface ExecMounterOptions {
  /** Per command (default 30 s): a hung mount must not hold a kubelet call forever. */
  timeoutMs?: number;
  /** Default /proc/self/mountinfo. */
  mountinfo?: string;
  /** Where read-only binds are prepared; must not be under a shared mount (default <tmpdir>/classcache-csi). */
  stageDir?: string;
}

export class ExecMounter implements Mounter {
  readonly #timeoutMs: number;
  readonly #mountinfo: string;
  readonly #stageDir: string;

  constructor(opts: ExecMounterOptions = {}) {
    this.#timeoutMs = opts.timeoutMs ?? 30_000;
    this.#mountinfo = opts.mountinfo ?? "/proc/self/mountinfo";
    this.#stageDir = opts.stageDir ?? join(tmpdir(), "classcache-csi");
  }

  async bindReadOnly(source: string, target: string): Promise<void> {
    await mkdir(this.#stageDir, { recursive: true, mode: 0o700 });
    const stage = await mkdtemp(join(this.#stageDir, "bind-"));
    try {
      await this.#exec("mount", ["--bind", source, stage]);
      try {
        // A bind mount ignores "ro" on the first call: the flags take effect on a remount of the bind.
        await this.#exec("mount", ["-o", "remount,bind,ro,nosuid,nodev", stage]);
        await this.#exec("mount", ["--bind", stage, target]);
      } finally {
        await this.unmount(stage);
      }
    } finally {
      await rmdir(stage).catch(() => {});
    }
    if (!(await this.#readOnly(target))) {
      await this.unmount(target).catch(() => {});
      throw new ClasscacheError("internal", `the bind mount at ${target} is not read-only; it was removed`, { hint: "the node's mount command did not keep the read-only flag of the staging mount" });
    }
  }

  async unmount(target: string): Promise<void> {
    await this.#exec("umount", [target]);
  }

  async isMountPoint(target: string): Promise<boolean> {
    return (await this.#topMount(target)) !== undefined;
  }

  /** The mountinfo entry of the topmost mount at `target`, if it is a mount point. */
  async #topMount(target: string): Promise<MountEntry | undefined> {
    let path: string;
    try {
      path = await realpath(target);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      path = resolve(target);
    }
    return parseMountinfo(await readFile(this.#mountinfo, "utf8")).findLast((m) => m.mountPoint === path);
  }

  async #readOnly(target: string): Promise<boolean> {
    return (await this.#topMount(target))?.options.includes("ro") ?? false;
  }

  async #exec(cmd: string, args: string[]): Promise<void> {
    try {
      await run(cmd, args, { timeout: this.#timeoutMs, killSignal: "SIGKILL" });
    } catch (err) {
      const e = err as { stderr?: string; killed?: boolean; message: string };
      const why = e.killed ? `timed out after ${this.#timeoutMs} ms` : (e.stderr?.trim() || e.message);
      throw new ClasscacheError("internal", `${cmd} ${args.join(" ")} failed: ${why}`, { hint: "the plugin needs a privileged container, with mount and umount on its PATH", cause: err });
    }
  }
}
