/** `classcache keys`: rotate the cluster's signing key without rebuilding any archive (see operator/keys.ts). */
import { KubeClient } from "../kube/client.ts";
import { rotateSigningKey, retireSigningKeys } from "../operator/keys.ts";
import { usageError } from "../runtime/errors.ts";
import { parse, type Command } from "./command.ts";

const usage = `
usage: classcache keys (rotate | retire) [--kubeconfig <file>] [--context <name>]

The key the operator signs manifests, ref bindings and build grants with.

  rotate    make a new signing key the operator's; the replaced public key stays trusted (by the
            operator, and by the node agents, which roll to read it), and the operator signs every
            manifest and binding it finds signed by it again with the new key
  retire    stop trusting every key but the current one: run it once \`kubectl get events\` shows
            SignedAgain for every ClassCache (or the operator has had a pass over all of them)

  --kubeconfig <file>   a kubeconfig that may read and update Secrets in classcache-system
  --context <name>      a kubeconfig context other than the current one
`;

export const keysCommand: Command = {
  name: "keys",
  summary: "rotate the cluster's signing key (rotate, then retire)",
  usage,
  async run(argv, io) {
    const { values, positionals } = parse("keys", argv, { kubeconfig: { type: "string" }, context: { type: "string" } }, true);
    const action = positionals[0];
    if (positionals.length !== 1 || (action !== "rotate" && action !== "retire")) throw usageError("say rotate or retire", "see classcache keys --help");
    const client = KubeClient.load({ ...(values.kubeconfig ? { kubeconfigPath: values.kubeconfig } : {}), ...(values.context ? { context: values.context } : {}) });
    if (action === "rotate") {
      const r = await rotateSigningKey(client);
      io.stdout.write(`signing with ${r.current} from the operator's next pass; still trusted: ${r.previous.join(", ")}\nrun \`classcache keys retire\` once every ClassCache shows SignedAgain\n`);
    } else {
      const r = await retireSigningKeys(client);
      io.stdout.write(r.retired.length ? `no longer trusted: ${r.retired.join(", ")}\n` : "nothing to retire: only the current key is trusted\n");
    }
    return 0;
  },
};
