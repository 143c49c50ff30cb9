/** `classcache stats` and `classcache top`: the one-screen view of archives, nodes, JVMs and ClassCaches. */
import { readFile } from "node:fs/promises";
import { loadTrustStore } from "../archive/signing.ts";
import { sleepUnlessAborted } from "../directory/common.ts";
import { openDirectory, redact, withPassword } from "../directory/open.ts";
import { KubeClient } from "../kube/client.ts";
import { ClasscacheError, usageError } from "../runtime/errors.ts";
import { collectStats, renderStats } from "../stats/stats.ts";
import { parse, type Command, type Io } from "./command.ts";

const usage = (name: string) => `
usage: classcache ${name} --directory <url> [options]

${name === "top" ? "Redraws" : "Prints"} what the directory knows: every archive, the nodes holding or pulling it, the
JVMs mapping it now with the hit rate they get and the memory its sharing saves (as the node
agents announce them), and with --kubeconfig each ClassCache's phase, archive and problem.
Read-only: it writes nothing anywhere.

  --directory <url>                redis://, valkey:// (e.g. through kubectl port-forward to
                                   classcache-directory in classcache-system) or http://
  --directory-password-file <f>    the directory's password (Secret classcache-directory-auth)
  --token-file <file>              the token of an http:// directory server
  --trust <pub.pem>                check each manifest's signature against this key (repeatable;
                                   the cluster's is ConfigMap classcache-trust); unchecked without
  --kubeconfig <file>              also list ClassCaches from this cluster
  --context <name>                 a kubeconfig context other than the current one
  -n, --namespace <ns>             only this namespace's ClassCaches
  --watch <seconds>                redraw every so often until interrupted${name === "top" ? " (default 2)" : ""}
  --json                           print the data as JSON (once)
`;

function statsCommandNamed(name: "stats" | "top"): Command {
  return {
    name,
    summary: name === "stats" ? "show archives, holders, live hit rates, memory saved and ClassCaches" : "stats, redrawn every 2 s",
    usage: usage(name),
    async run(argv: string[], io: Io) {
      const { values } = parse(name, argv, {
        directory: { type: "string" },
        "directory-password-file": { type: "string" },
        "token-file": { type: "string" },
        trust: { type: "string", multiple: true },
        kubeconfig: { type: "string" },
        context: { type: "string" },
        namespace: { type: "string", short: "n" },
        watch: { type: "string", ...(name === "top" ? { default: "2" } : {}) },
        json: { type: "boolean", default: false },
      });
      if (!values.directory) throw usageError("--directory is required", "e.g. --directory redis://127.0.0.1:6379 after kubectl -n classcache-system port-forward svc/classcache-directory 6379");
      const every = values.watch === undefined ? undefined : Number(values.watch);
      if (every !== undefined && !(every > 0)) throw usageError(`--watch ${values.watch} is not a positive number of seconds`);
      const url = values["directory-password-file"] ? withPassword(values.directory, (await readFile(values["directory-password-file"], "utf8")).trim()) : values.directory;
      const token = values["token-file"] ? (await readFile(values["token-file"], "utf8")).trim() : undefined;
      const trust = values.trust?.length ? await loadTrustStore(values.trust) : undefined;
      const client =
        values.kubeconfig || values.context
          ? KubeClient.load({ ...(values.kubeconfig ? { kubeconfigPath: values.kubeconfig } : {}), ...(values.context ? { context: values.context } : {}) })
          : undefined;
      const directory = openDirectory(url, { ...(token ? { token } : {}) });
      const source = `directory ${redact(values.directory)}`;
      try {
        if (!(await directory.ping())) throw new ClasscacheError("input", `the directory at ${redact(values.directory)} does not answer`, { hint: "check the URL, the password and that a port-forward is running" });
        const manifests = new Map<string, string>();
        const once = () => collectStats({ directory, manifests, ...(trust ? { trust } : {}), ...(client ? { client } : {}), ...(values.namespace ? { namespace: values.namespace } : {}) });
        if (values.json || every === undefined) {
          const s = await once();
          io.stdout.write(values.json ? JSON.stringify(s, null, 2) + "\n" : renderStats(s, source));
          return 0;
        }
        while (!io.signal.aborted) {
          const s = await once();
          // Clear the screen and home the cursor, like top.
          io.stdout.write(`\x1b[2J\x1b[H${renderStats(s, source)}`);
          await sleepUnlessAborted(every * 1000, io.signal);
        }
        return 0;
      } finally {
        await directory.close();
      }
    },
  };
}

export const statsCommand = statsCommandNamed("stats");
export const topCommand = statsCommandNamed("top");
