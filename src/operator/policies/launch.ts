/**
 * The launch of a container whose command comes from its image's ENTRYPOINT: what the build
 * Job's launch probe recorded (src/build/probe/LaunchProbe.java), read from the probe init
 * container's termination message, checked for shape (src/build/probe.ts), and turned into the
 * command the pod patch rewrites. Pure: pods and records in, a launch or a reason out.
 *
 * The record is the tenant's own image speaking about its own pods, in its own namespace; it is
 * trusted as far as that image is, and it only ever goes into that workload's own template.
 */
import { parseLaunchRecord, TERMINATION_MESSAGE_BYTES } from "../../build/probe.ts";
import { Reasons } from "../api/v1.ts";
import type { Container, InjectionOutcome } from "../inject.ts";
import { PROBE_CONTAINER } from "../objects/buildjob.ts";

interface Terminated {
  exitCode?: number;
  message?: string;
  finishedAt?: string;
}
export interface PodWithProbe {
  status?: { initContainerStatuses?: { name: string; state?: { terminated?: Terminated }; lastState?: { terminated?: Terminated } }[] };
}

/** What a build Job's probe said: the recorded command, why there is none, or nothing yet. */
export type ProbeReport = { command: string[] } | { problem: InjectionOutcome } | undefined;

const SET_LAUNCH = "set spec.launch.command of the ClassCache to the java command the container runs";

/** The newest ended probe of the build Job's pods, read. */
export function probeReport(pods: PodWithProbe[], job: string): ProbeReport {
  const ended = pods
    .map((p) => p.status?.initContainerStatuses?.find((c) => c.name === PROBE_CONTAINER))
    .map((c) => c?.state?.terminated ?? c?.lastState?.terminated)
    .filter((t): t is Terminated => t !== undefined)
    .sort((a, b) => (b.finishedAt ?? "").localeCompare(a.finishedAt ?? ""));
  const t = ended[0];
  if (!t) return undefined;
  const text = t.message?.trim() ?? "";
  const record = text.startsWith("{") ? parseLaunchRecord(text, TERMINATION_MESSAGE_BYTES) : undefined;
  if (record && "command" in record) return { command: record.command };
  if (record) return { problem: unknown(`the launch probe of build Job ${job} could not record the image's java launch: ${record.error}; ${SET_LAUNCH}`) };
  if ((t.exitCode ?? 0) === 0) {
    return {
      problem: {
        patched: false,
        reason: Reasons.LaunchNotJava,
        message: `the image's ENTRYPOINT ended without starting java (the launch probe of build Job ${job} recorded nothing): it runs a shell or another program; ${SET_LAUNCH}`,
      },
    };
  }
  const said = text ? `: ${text.length > 1000 ? `…${text.slice(-1000)}` : text}` : "";
  return { problem: unknown(`the image's ENTRYPOINT exited with code ${t.exitCode} in build Job ${job} before the launch probe recorded a java launch${said}; ${SET_LAUNCH}`) };
}

/**
 * The command a recorded launch means for the container's patch: the recorded command line
 * without the container's own args, which Kubernetes appends to the ENTRYPOINT (the patch keeps
 * them as they are). Without args of its own the container ran the image's CMD, which is part
 * of the command then. An ENTRYPOINT that does not hand the args to java unchanged cannot be
 * replaced by its java command.
 */
export function launchCommandFor(recorded: string[], container: Pick<Container, "args">): { command: string[] } | { problem: InjectionOutcome } {
  const args = container.args ?? [];
  const at = recorded.length - args.length;
  if (at >= 1 && args.every((a, i) => recorded[at + i] === a)) return { command: recorded.slice(0, at) };
  return { problem: unknown(`the java launch the image's ENTRYPOINT makes (${short(recorded)}) does not end with the container's args as given, so the ENTRYPOINT changes them and cannot be replaced by its java command; ${SET_LAUNCH}`) };
}

/** What the condition says while the build's probe has not recorded the launch yet. */
export function launchPending(container: string, job: string): InjectionOutcome {
  return unknown(`container "${container}" has no command in the pod spec: its image's ENTRYPOINT starts the JVM, and build Job ${job} records that launch before the workload is patched (or ${SET_LAUNCH})`);
}

function unknown(message: string): InjectionOutcome {
  return { patched: false, reason: Reasons.LaunchUnknown, message };
}

function short(argv: string[]): string {
  const text = argv.join(" ");
  return text.length > 300 ? `${text.slice(0, 300)}…` : text;
}
