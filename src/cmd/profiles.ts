/** `classcache profiles`: the catalog of agent profiles `--profile <name>` takes, and what each proves. */
import { catalogNames, loadProfile, type AgentProfile } from "../archive/profile.ts";
import { usageError } from "../runtime/errors.ts";
import { table } from "../util/format.ts";
import { parse, type Command } from "./command.ts";

const usage = `
usage: classcache profiles [--json]

Lists the built-in agent profiles (--profile <name>, or spec.profile in a ClassCache): the mode
each runs the agent in, how the agent gets onto the JVM, and how a build proves the agent's
instrumentation fires. A build whose agent does not fire fails and publishes nothing; a profile
without evidence cannot prove it, and its archives say "instrumented: n/a". Your own profile:
--profile <file.yaml> (kind AgentProfile).

  --json   one object per profile instead of a table
`;

interface Row {
  name: string;
  version: string | null;
  mode: string;
  bootClassPath: boolean;
  proof: string | null;
}

function row(p: AgentProfile): Row {
  return { name: p.name, version: p.version ?? null, mode: p.mode, bootClassPath: p.build.bootclasspath || p.runtime.bootclasspath, proof: p.verify.evidence ?? null };
}

export const profilesCommand: Command = {
  name: "profiles",
  summary: "list the built-in agent profiles and how each proves its agent instruments",
  usage,
  async run(argv, io) {
    const { values, positionals } = parse("profiles", argv, { json: { type: "boolean" } }, true);
    if (positionals.length) throw usageError("profiles takes no arguments");
    const rows = await Promise.all(catalogNames().map(async (n) => row(await loadProfile(n))));
    if (values.json) {
      io.stdout.write(JSON.stringify(rows, null, 2) + "\n");
      return 0;
    }
    io.stdout.write(
      table(
        ["PROFILE", "VERSION", "MODE", "BOOT CLASS PATH", "INSTRUMENTATION PROVEN BY"],
        rows.map((r) => [r.name, r.version ?? "", r.mode, r.bootClassPath ? "yes" : "no", r.proof ? `a line matching /${r.proof}/` : "nothing (no evidence: not proven)"]),
        "text",
      ).join("\n") + "\n",
    );
    return 0;
  },
};
