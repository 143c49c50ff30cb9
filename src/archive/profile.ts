/**
 * Agent profiles: YAML documents (kind AgentProfile) that say how an agent runs in each phase.
 * A profile written for cluster-classcache is valid here and means the same thing; `spec.mode`
 * and `spec.verify` are ours.
 */
import { readdirSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Ajv2020 } from "ajv/dist/2020.js";
import { parse as parseYaml, YAMLParseError } from "yaml";
import { ClasscacheError } from "../runtime/errors.ts";

export type AgentMode = "none" | "hybrid" | "baked";

export interface PhaseSpec {
  javaagent: boolean;
  bootclasspath: boolean;
  extraJvmOpts: string[];
  /** More options where the archive is an AOT cache (JDK 25+), e.g. -XX:-AOTClassLinking for an agent that retransforms JDK classes. */
  aotExtraJvmOpts?: string[];
}

/** A validated profile with every default filled in. */
export interface AgentProfile {
  name: string;
  version: string | undefined;
  mode: AgentMode;
  agent: { jar: string; config: string | undefined };
  build: PhaseSpec;
  runtime: PhaseSpec;
  verify: { extraJvmOpts: string[]; evidence: string | undefined };
  /** The document as written (for the key: the full profile content is an input). */
  source: unknown;
}

const catalogDir = join(import.meta.dirname, "profiles");
const schema = JSON.parse(readFileSync(join(catalogDir, "agent-profile.schema.json"), "utf8")) as object;
const ajv = new Ajv2020({ allErrors: true, strict: true });
const validate = ajv.compile(schema);

/** Names of the profiles that ship with classcache. */
export function catalogNames(): string[] {
  return readdirSync(catalogDir)
    .filter((f) => f.endsWith(".yaml"))
    .map((f) => f.slice(0, -5))
    .sort();
}

/** The raw YAML text of every catalog profile, by file name (for the operator's ConfigMap). */
export function catalogFiles(): Record<string, string> {
  return Object.fromEntries(catalogNames().map((n) => [`${n}.yaml`, readFileSync(join(catalogDir, `${n}.yaml`), "utf8")]));
}

/** Loads a profile by catalog name or from a YAML file. */
export async function loadProfile(nameOrPath: string): Promise<AgentProfile> {
  if (/^[a-z0-9][-a-z0-9]*$/.test(nameOrPath) && !nameOrPath.includes("/")) {
    if (!catalogNames().includes(nameOrPath)) {
      throw new ClasscacheError("input", `unknown agent profile "${nameOrPath}"`, {
        hint: `use one of: ${catalogNames().join(", ")} — or a path to an AgentProfile YAML file`,
      });
    }
    return parseProfile(await readFile(join(catalogDir, `${nameOrPath}.yaml`), "utf8"), `catalog profile ${nameOrPath}`);
  }
  let text: string;
  try {
    text = await readFile(nameOrPath, "utf8");
  } catch (err) {
    throw new ClasscacheError("input", `cannot read agent profile ${nameOrPath}`, {
      hint: `use a catalog name (${catalogNames().join(", ")}) or a readable YAML file`,
      cause: err,
    });
  }
  return parseProfile(text, nameOrPath);
}

/** Parses and validates a profile document; `origin` names it in error messages. */
export function parseProfile(text: string, origin: string): AgentProfile {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    const where = err instanceof YAMLParseError ? ` (line ${err.linePos?.[0].line ?? "?"})` : "";
    throw new ClasscacheError("input", `agent profile ${origin} is not valid YAML${where}`, { cause: err });
  }
  if (!validate(doc)) {
    const problems = (validate.errors ?? []).map((e) => {
      const extra = e.keyword === "additionalProperties" ? ` "${String(e.params.additionalProperty)}"` : "";
      return `${e.instancePath || "/"}: ${e.message ?? "invalid"}${extra}`;
    });
    throw new ClasscacheError("input", `agent profile ${origin} does not match the AgentProfile schema`, {
      details: problems.join("\n"),
      hint: "see docs/profiles.md for the fields of an AgentProfile",
    });
  }
  return normalize(doc as RawProfile);
}

interface RawPhase {
  javaagent?: boolean;
  bootclasspath?: boolean;
  extraJvmOpts?: string[];
  aotExtraJvmOpts?: string[];
}
interface RawProfile {
  metadata: { name: string; version?: string };
  spec: {
    mode?: AgentMode;
    agent: { jar: string; config?: string };
    build: RawPhase;
    runtime: RawPhase;
    verify?: { extraJvmOpts?: string[]; evidence?: string };
  };
}

function normalize(raw: RawProfile): AgentProfile {
  // The schema defaults of cluster-classcache: build runs the agent, runtime does not,
  // both put it on the boot class path.
  const build: PhaseSpec = {
    javaagent: raw.spec.build.javaagent ?? true,
    bootclasspath: raw.spec.build.bootclasspath ?? true,
    extraJvmOpts: raw.spec.build.extraJvmOpts ?? [],
    ...(raw.spec.build.aotExtraJvmOpts ? { aotExtraJvmOpts: raw.spec.build.aotExtraJvmOpts } : {}),
  };
  const runtime: PhaseSpec = {
    javaagent: raw.spec.runtime.javaagent ?? false,
    bootclasspath: raw.spec.runtime.bootclasspath ?? true,
    extraJvmOpts: raw.spec.runtime.extraJvmOpts ?? [],
    ...(raw.spec.runtime.aotExtraJvmOpts ? { aotExtraJvmOpts: raw.spec.runtime.aotExtraJvmOpts } : {}),
  };
  // In cluster-classcache, an agent off at run time meant "its classes are baked in".
  const mode: AgentMode = raw.spec.mode ?? (runtime.javaagent ? "hybrid" : "baked");
  const evidence = raw.spec.verify?.evidence;
  if (evidence !== undefined) {
    try {
      new RegExp(evidence);
    } catch (err) {
      throw new ClasscacheError("input", `agent profile ${raw.metadata.name}: spec.verify.evidence is not a valid regular expression`, { cause: err });
    }
  }
  if (mode === "baked" && runtime.javaagent) {
    throw new ClasscacheError("input", `agent profile ${raw.metadata.name}: mode baked needs spec.runtime.javaagent: false`, {
      hint: "baked means the agent is off at run time; use mode hybrid to keep it on",
    });
  }
  if (mode === "hybrid" && !runtime.javaagent) {
    throw new ClasscacheError("input", `agent profile ${raw.metadata.name}: mode hybrid needs spec.runtime.javaagent: true`, {
      hint: "hybrid keeps the agent on at run time; use mode baked to turn it off",
    });
  }
  return {
    name: raw.metadata.name,
    version: raw.metadata.version,
    mode,
    agent: { jar: raw.spec.agent.jar, config: raw.spec.agent.config },
    build,
    runtime,
    verify: { extraJvmOpts: raw.spec.verify?.extraJvmOpts ?? [], evidence },
    source: raw,
  };
}
