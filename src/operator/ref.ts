/**
 * A ClassCache's ref: the digest of everything the operator can see that goes into a build of
 * its workload — image, jar, launch, agent, profile, mode, training, and the sharing scope. The
 * operator cannot compute the archive key itself (that needs the image's JVM and files); the
 * build resolves ref → key and binds it, signed, in the directory. A new image → a new ref →
 * a new build; the same tag with new content → a new ref too, once the pods' jar checks report
 * the content they run (status.appDigest). Memory sharing is not in it: it only changes
 * run-time flags.
 */
import { canonicalJson, sha256Hex } from "../util/hash.ts";

export const REF_FORMAT = "classcache.dev/ref/v1";

export interface RefInputs {
  /** The namespace for namespace-scoped archives, "" for cluster-shared ones. */
  scope: string;
  image: string;
  jarPath: string;
  /** The java command line as the pod runs it, app args included. */
  launch: string[];
  agent: { image: string; jarPath: string; configPath: string } | null;
  /** Profile name for a built-in one, or the full text of an inline profile. */
  profile: string;
  mode: string;
  training: { exitOnRefresh: boolean; readyUrl: string; warmupUrls: string[]; timeoutSeconds: number };
  /**
   * The app jar's sha256 the workload's pods were found to run (status.appDigest), once their
   * jar checks saw it differ from an archive's: the image behind a tag changed, so must the ref.
   */
  appDigest?: string;
  /**
   * The app container has no command, so its image's ENTRYPOINT starts the JVM: the build records
   * that launch with the launch probe and trains with it, which is another build than one of the
   * jar path alone (what such a ref meant before the probe).
   */
  entrypoint?: boolean;
}

export function computeRef(inputs: RefInputs): string {
  const { appDigest, entrypoint, ...rest } = inputs;
  // Absent until content was seen to change (or for a launch the pod spec shows): refs made before them stay what they were.
  return sha256Hex(canonicalJson({ format: REF_FORMAT, ...rest, ...(appDigest ? { appDigest } : {}), ...(entrypoint ? { entrypoint } : {}) }));
}
