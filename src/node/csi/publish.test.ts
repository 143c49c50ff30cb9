import assert from "node:assert/strict";
import { it } from "node:test";
import { checkTarget, isRefusal, planPublish, viewSource, type PublishRequest } from "./publish.ts";

const paths = { store: "/var/lib/classcache", kubeletDir: "/var/lib/kubelet" };
const uid = "6f1c6c1e-8f3b-4c1e-9d6a-0b7f3c2a1e55";
const target = `/var/lib/kubelet/pods/${uid}/volumes/kubernetes.io~csi/classcache/mount`;
const request = (context: Record<string, string> = {}, over: Partial<PublishRequest> = {}): PublishRequest => ({
  volume_id: "csi-1",
  target_path: target,
  volume_capability: { access_type: "mount", mount: {} },
  volume_context: { "csi.storage.k8s.io/ephemeral": "true", "csi.storage.k8s.io/pod.namespace": "team-a", "csi.storage.k8s.io/pod.name": "app-0", "csi.storage.k8s.io/pod.uid": uid, ...context },
  ...over,
});
const refusal = (req: PublishRequest) => {
  const plan = planPublish(req, paths);
  return isRefusal(plan) ? plan.refused : undefined;
};

void it("binds the pod's namespace's view by default, the cluster-wide view or the agent's socket directory on request", () => {
  assert.deepEqual(planPublish(request(), paths), { view: "scope", namespace: "team-a", podName: "app-0", podUid: uid, source: "/var/lib/classcache/scopes/team-a", target });
  assert.equal(viewSource("cluster", "team-a", paths.store), "/var/lib/classcache/scopes/_cluster");
  assert.equal(viewSource("build", "team-a", paths.store), "/var/lib/classcache/run");
  assert.equal((planPublish(request({ view: "cluster" }), paths) as { source: string }).source, "/var/lib/classcache/scopes/_cluster");
});

void it("takes the namespace only from the kubelet, and refuses anything a pod could use to choose another", () => {
  assert.equal(refusal(request({ namespace: "team-b" })), "UnknownAttribute");
  assert.equal(refusal(request({ view: "scopes/team-b" })), "UnknownView");
  assert.equal(refusal(request({ view: "" })), "UnknownView");
  assert.equal(refusal(request({ "csi.storage.k8s.io/pod.namespace": "_cluster" })), "NamespaceInvalid");
  assert.equal(refusal(request({ "csi.storage.k8s.io/pod.namespace": "" })), "NamespaceInvalid");
  assert.equal(refusal(request({ "csi.storage.k8s.io/pod.uid": "" })), "PodUidMismatch");
  assert.equal(refusal(request({ "csi.storage.k8s.io/ephemeral": "false" })), "NotEphemeral");
  assert.equal(refusal(request({}, { volume_capability: { access_type: "block", block: {} } })), "NotMountCapability");
  assert.equal(refusal(request({}, { volume_capability: null })), "NotMountCapability");
  assert.equal(refusal(request({}, { volume_id: "" })), "VolumeIdMissing");
});

void it("accepts only normal absolute targets inside a pod's directory under the kubelet's pods directory", () => {
  assert.deepEqual(checkTarget(target, "/var/lib/kubelet/"), { podDir: uid });
  const reason = (t: string | undefined) => {
    const r = checkTarget(t, "/var/lib/kubelet");
    return isRefusal(r) ? r.refused : undefined;
  };
  assert.equal(reason(undefined), "TargetNotAbsolute");
  assert.equal(reason("pods/x/mount"), "TargetNotAbsolute");
  assert.equal(reason(`/var/lib/kubelet/pods/${uid}/../../../../etc/mount`), "TargetNotNormal");
  assert.equal(reason(`/var/lib/kubelet/pods/${uid}//mount`), "TargetNotNormal");
  assert.equal(reason(`${target}/`), "TargetNotNormal");
  assert.equal(reason("/var/lib/kubelet/pods"), "TargetOutsidePods");
  assert.equal(reason(`/var/lib/kubelet/pods/${uid}`), "TargetOutsidePods");
  assert.equal(reason("/var/lib/kubelet/plugins/x/mount"), "TargetOutsidePods");
  assert.equal(reason("/var/lib/kubelet/podsx/a/mount"), "TargetOutsidePods");
});
