import assert from "node:assert/strict";
import { it } from "node:test";
import { parseMountinfo, unescapeMountinfo } from "./mount.ts";

void it("reads mount points and their options from mountinfo, unescaping spaces, tabs, newlines and backslashes", () => {
  const text = [
    "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw",
    "279 22 254:0 /store/scopes/a /var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/my\\040vol/mount ro,nosuid,nodev,relatime shared:2 - ext4 /dev/vda rw",
    "",
  ].join("\n");
  assert.deepEqual(parseMountinfo(text), [
    { mountPoint: "/", options: ["rw", "relatime"] },
    { mountPoint: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/my vol/mount", options: ["ro", "nosuid", "nodev", "relatime"] },
  ]);
  assert.equal(unescapeMountinfo("a\\011b\\012c\\134d"), "a\tb\nc\\d");
});
