#!/usr/bin/env bash
# A real Kubernetes cluster on this one machine, for tests, benchmarks and demos:
#
#   cluster.sh up <dir> [--nodes N]        writes <dir>/kubeconfig (usable from the host as it is);
#                                          exits 0 once every node is Ready
#   cluster.sh images <dir> <oci.tar>...   imports images into every node's containerd
#   cluster.sh down <dir>                  stops everything and removes what up made
#
# Layout (everything in the project's own network namespaces; nothing leaves the machine):
#   <p>cp   the control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
#           CoreDNS on 10.250.0.1, a bridge the nodes hang off
#   <p>nN   node N: its address 10.250.0.1N on a veth to that bridge, containerd, kubelet and
#           kube-proxy; pods get 10.244.N.0/24 on the node's own CNI bridge, routed between nodes
# The host reaches the API server through a forwarder on 127.0.0.1 (the kubeconfig names it).
# Host settings are left alone: each node's containerd and kubelet run in the node's own mount
# namespace, where /var/lib is the node's directory and the sysctls the kubelet would rewrite read
# as it wants them; kube-proxy keeps the host's conntrack settings; every process, cgroup and
# network namespace up makes is removed by down, with the cluster dir.
# Binaries: scripts/testenv/build-binaries.sh (control-plane and cluster sets, cached per version);
# containerd, runc, the CNI plugins, socat and busybox from apt (scripts/setup.sh).
set -Eeuo pipefail

REPO="$(cd "$(dirname "$0")/../.." && pwd)"
NODE_BIN="$REPO/node_modules/.bin/node"
SANDBOX_IMAGE="registry.k8s.io/pause:3.10"
CP_ADDR="10.250.0.1"
SERVICE_CIDR="10.96.0.0/16"
API_SERVICE_IP="10.96.0.1"
CLUSTER_DOMAIN="cluster.local"
# Set when an up made /run/netns (see network); shared by every cluster of this machine.
NETNS_MARK="/run/classcache-cluster.made-run-netns"
CGROUP_CONTROLLERS=(cpu cpuacct cpuset memory pids blkio devices freezer hugetlb systemd)
# Where the kubelet also makes cgroups (the v2 hierarchy of a hybrid host): removed by down.
CGROUP_ALSO=(unified)

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# ---------------------------------------------------------------- names and paths

# A short prefix, unique per cluster dir: network namespaces and interface names are host-wide.
prefix_for() { printf 'cc%s' "$(printf '%s' "$1" | sha1sum | cut -c1-5)"; }

setup_names() {
  DIR="$(realpath -m "$1")"
  P="$(prefix_for "$DIR")"
  RUN="/run/$P"           # sockets: unix socket paths must stay short
  CP_NS="${P}cp"
  PKI="$DIR/pki"
  BIN_CP=""; BIN=""
}

node_ns() { printf '%sn%s' "$P" "$1"; }
node_name() { printf 'node-%s' "$1"; }
node_ip() { printf '10.250.0.%s' "$((10 + $1))"; }
node_cidr() { printf '10.244.%s.0/24' "$1"; }
node_dir() { printf '%s/nodes/%s' "$DIR" "$1"; }
node_sock() { printf '%s/n%s/containerd.sock' "$RUN" "$1"; }
in_ns() { local ns="$1"; shift; nsenter --net="/run/netns/$ns" "$@"; }

# Starts a long-running process in the background, in its own session, logging to <dir>/logs.
start() {
  local name="$1"; shift
  mkdir -p "$DIR/logs" "$DIR/pids"
  # `in_ns` is a function, which setsid cannot run: spell it out.
  if [[ "$1" == in_ns ]]; then set -- nsenter --net="/run/netns/$2" "${@:3}"; fi
  if [[ "$1" == in_node ]]; then set -- nsenter --target "$(cat "$DIR/pids/mountns-$2.pid")" --mount --net "${@:3}"; fi
  setsid "$@" >"$DIR/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$DIR/pids/$name.pid"
}

wait_for() {
  local what="$1" timeout="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || { log "timed out waiting for $what"; return 1; }
    sleep 1
  done
}

kubectl_() { "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" "$@"; }

# ---------------------------------------------------------------- binaries

binaries() {
  BIN_CP="$(bash "$REPO/scripts/testenv/build-binaries.sh" | tail -n1)"
  BIN="$(bash "$REPO/scripts/testenv/build-binaries.sh" cluster | tail -n1)"
  local b
  for b in containerd containerd-shim-runc-v2 ctr runc socat busybox openssl; do
    command -v "$b" >/dev/null || die "$b is missing: run scripts/setup.sh"
  done
  [[ -x /usr/lib/cni/bridge ]] || die "the CNI plugins are missing (apt-get install containernetworking-plugins)"
}

# ---------------------------------------------------------------- PKI

pki() {
  mkdir -p "$PKI"; chmod 700 "$PKI"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 30 \
    -subj "/CN=classcache-test-cluster-ca" 2>/dev/null
  cat > "$PKI/apiserver.ext" <<EOF
subjectAltName=IP:127.0.0.1,IP:$CP_ADDR,IP:$API_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN
extendedKeyUsage=serverAuth
EOF
  openssl req -newkey rsa:2048 -nodes -keyout "$PKI/apiserver.key" -out "$PKI/apiserver.csr" -subj "/CN=kube-apiserver" 2>/dev/null
  openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 30 \
    -extfile "$PKI/apiserver.ext" -out "$PKI/apiserver.crt" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' > "$PKI/client.ext"
  openssl req -newkey rsa:2048 -nodes -keyout "$PKI/apiserver-kubelet-client.key" -out "$PKI/kc.csr" \
    -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
  openssl x509 -req -in "$PKI/kc.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 30 \
    -extfile "$PKI/client.ext" -out "$PKI/apiserver-kubelet-client.crt" 2>/dev/null
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  # Static tokens: token,user,uid,"groups"
  local t
  : > "$PKI/tokens.csv"
  for who in admin kube-controller-manager kube-scheduler kube-proxy coredns; do
    t="$(openssl rand -hex 24)"; printf '%s' "$t" > "$PKI/$who.token"
  done
  {
    printf '%s,admin,admin,"system:masters"\n' "$(cat "$PKI/admin.token")"
    printf '%s,system:kube-controller-manager,kcm\n' "$(cat "$PKI/kube-controller-manager.token")"
    printf '%s,system:kube-scheduler,ksched\n' "$(cat "$PKI/kube-scheduler.token")"
    printf '%s,system:kube-proxy,kproxy\n' "$(cat "$PKI/kube-proxy.token")"
    printf '%s,coredns,coredns,"system:masters"\n' "$(cat "$PKI/coredns.token")"
  } >> "$PKI/tokens.csv"
  local i
  for ((i = 1; i <= NODES; i++)); do
    t="$(openssl rand -hex 24)"; printf '%s' "$t" > "$PKI/node-$i.token"
    printf '%s,system:node:%s,node-%s,"system:nodes"\n' "$t" "$(node_name "$i")" "$i" >> "$PKI/tokens.csv"
  done
  chmod 600 "$PKI"/*
}

# kubeconfig <file> <server> <token-name>
kubeconfig() {
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: classcache-test
  cluster:
    server: $2
    certificate-authority-data: $(base64 -w0 < "$PKI/ca.crt")
users:
- name: $3
  user:
    token: $(cat "$PKI/$3.token")
contexts:
- name: classcache-test
  context: {cluster: classcache-test, user: $3, namespace: default}
current-context: classcache-test
EOF
  chmod 600 "$1"
}

# ---------------------------------------------------------------- network

network() {
  # `ip netns add` makes /run/netns a mount (a shared bind of itself) when it is not one yet:
  # remembered, so the down that leaves it empty takes it away again.
  if ! mountpoint -q /run/netns; then
    [[ -d /run/netns ]] || echo dir > "$NETNS_MARK"
    echo mount >> "$NETNS_MARK"
  fi
  mkdir -p /run/netns
  ip netns add "$CP_NS"
  in_ns "$CP_NS" ip link set lo up
  in_ns "$CP_NS" ip link add br0 type bridge
  in_ns "$CP_NS" ip addr add "$CP_ADDR/24" dev br0
  in_ns "$CP_NS" ip link set br0 up
  local i ns j
  for ((i = 1; i <= NODES; i++)); do
    ns="$(node_ns "$i")"
    ip netns add "$ns"
    in_ns "$ns" ip link set lo up
    # Both ends are created inside the control plane's namespace, so no interface ever appears on the host.
    in_ns "$CP_NS" ip link add "n$i" type veth peer name eth0 netns "$ns"
    in_ns "$CP_NS" ip link set "n$i" master br0 up
    in_ns "$ns" ip addr add "$(node_ip "$i")/24" dev eth0
    in_ns "$ns" ip link set eth0 up
    in_ns "$ns" sysctl -qw net.ipv4.ip_forward=1
  done
  # Pod networks: every namespace routes node N's pods through node N.
  for ((j = 1; j <= NODES; j++)); do
    in_ns "$CP_NS" ip route add "$(node_cidr "$j")" via "$(node_ip "$j")"
    for ((i = 1; i <= NODES; i++)); do
      (( i == j )) || in_ns "$(node_ns "$i")" ip route add "$(node_cidr "$j")" via "$(node_ip "$j")"
    done
  done
  for ((i = 1; i <= NODES; i++)); do
    in_ns "$(node_ns "$i")" ip route add default via "$CP_ADDR"
  done
}

# ---------------------------------------------------------------- control plane

control_plane() {
  local cp="$DIR/cp"
  mkdir -p "$cp"
  start etcd in_ns "$CP_NS" "$BIN_CP/etcd" --name=cp --data-dir="$cp/etcd" \
    --listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
    --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
    --initial-cluster=cp=http://127.0.0.1:2380 --unsafe-no-fsync --log-level=warn
  wait_for etcd 60 in_ns "$CP_NS" bash -c 'exec 3<>/dev/tcp/127.0.0.1/2379'

  start kube-apiserver in_ns "$CP_NS" "$BIN_CP/kube-apiserver" \
    --etcd-servers=http://127.0.0.1:2379 --bind-address=0.0.0.0 --advertise-address="$CP_ADDR" --secure-port=6443 \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" --client-ca-file="$PKI/ca.crt" \
    --token-auth-file="$PKI/tokens.csv" --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction --service-cluster-ip-range="$SERVICE_CIDR" \
    --service-account-issuer=https://kubernetes.default.svc."$CLUSTER_DOMAIN" \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP --enable-aggregator-routing=true \
    --allow-privileged=true --profiling=false
  # The host's way in: a forwarder on loopback into the control plane's namespace.
  API_PORT="$(free_port)"
  start api-forward socat "TCP-LISTEN:$API_PORT,bind=127.0.0.1,fork,reuseaddr" \
    "EXEC:nsenter --net=/run/netns/$CP_NS socat STDIO TCP\\:$CP_ADDR\\:6443"
  echo "$API_PORT" > "$DIR/api-port"
  kubeconfig "$DIR/kubeconfig" "https://127.0.0.1:$API_PORT" admin
  local who
  for who in kube-controller-manager kube-scheduler kube-proxy coredns; do
    kubeconfig "$cp/$who.kubeconfig" "https://$CP_ADDR:6443" "$who"
  done
  for ((i = 1; i <= NODES; i++)); do kubeconfig "$(node_dir "$i")/kubelet.kubeconfig" "https://$CP_ADDR:6443" "node-$i"; done
  wait_for "kube-apiserver" 120 kubectl_ get --raw /readyz

  start kube-controller-manager in_ns "$CP_NS" "$BIN/kube-controller-manager" \
    --kubeconfig="$cp/kube-controller-manager.kubeconfig" --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --flex-volume-plugin-dir="$cp/flex" --bind-address=127.0.0.1 --profiling=false
  start kube-scheduler in_ns "$CP_NS" "$BIN/kube-scheduler" \
    --kubeconfig="$cp/kube-scheduler.kubeconfig" --leader-elect=false --bind-address=127.0.0.1 --profiling=false
  cat > "$cp/Corefile" <<EOF
.:53 {
    bind $CP_ADDR
    errors
    kubernetes $CLUSTER_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $cp/coredns.kubeconfig classcache-test
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
EOF
  start coredns in_ns "$CP_NS" "$BIN/coredns" -conf "$cp/Corefile"
}

free_port() {
  "$NODE_BIN" -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# ---------------------------------------------------------------- nodes

# Each node's containerd and kubelet share one mount namespace (a slave of the host's: host
# mounts reach it, none of its own reach the host), held open by a sleeping process. In it:
#  - /var/lib is the node's own directory, so hostPath volumes (the classcache store at
#    /var/lib/classcache), the CNI's state and the kubelet's root directory (/var/lib/kubelet,
#    the default, where CSI plugins expect it) are per node, inside the cluster dir, as on
#    separate machines;
#  - the sysctls the kubelet would rewrite read as it wants them (it then leaves them alone).
node_mount_namespace() {
  local i="$1" nd
  nd="$(node_dir "$i")"
  mkdir -p "$nd/var-lib" "$nd/sysctl"
  printf '1\n' > "$nd/sysctl/overcommit_memory"; printf '0\n' > "$nd/sysctl/panic_on_oom"
  printf '10\n' > "$nd/sysctl/panic"; printf '1\n' > "$nd/sysctl/panic_on_oops"
  printf '1000000\n' > "$nd/sysctl/root_maxkeys"; printf '25000000\n' > "$nd/sysctl/root_maxbytes"
  : > "$nd/var-lib/.node-$i"
  start "mountns-$i" in_ns "$(node_ns "$i")" unshare --mount --propagation slave sh -c '
    set -e
    s="$1/sysctl"
    mount --bind "$1/var-lib" /var/lib
    mount --bind "$s/overcommit_memory" /proc/sys/vm/overcommit_memory
    mount --bind "$s/panic_on_oom" /proc/sys/vm/panic_on_oom
    mount --bind "$s/panic" /proc/sys/kernel/panic
    mount --bind "$s/panic_on_oops" /proc/sys/kernel/panic_on_oops
    mount --bind "$s/root_maxkeys" /proc/sys/kernel/keys/root_maxkeys
    mount --bind "$s/root_maxbytes" /proc/sys/kernel/keys/root_maxbytes
    exec sleep infinity' sh "$nd"
  wait_for "node $i's mount namespace" 20 in_node "$i" test -e "/var/lib/.node-$i"
}

# Runs a command in node N's network and mount namespaces.
in_node() {
  local i="$1"; shift
  nsenter --target "$(cat "$DIR/pids/mountns-$i.pid")" --mount --net "$@"
}

node_up() {
  local i="$1" ns nd name
  ns="$(node_ns "$i")"; nd="$(node_dir "$i")"; name="$(node_name "$i")"
  mkdir -p "$nd/cni" "$nd/containerd" "$nd/pod-logs" "$nd/volume-plugins" "$nd/ipam" "$RUN/n$i"
  cat > "$nd/cni/10-pods.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$P-n$i",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": { "type": "host-local", "dataDir": "$nd/ipam", "ranges": [[{ "subnet": "$(node_cidr "$i")" }]], "routes": [{ "dst": "0.0.0.0/0" }] }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
  cat > "$nd/containerd.toml" <<EOF
version = 2
root = "$nd/containerd/root"
state = "$RUN/n$i/state"
[grpc]
  address = "$(node_sock "$i")"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$SANDBOX_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$nd/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
EOF
  node_mount_namespace "$i"
  start "containerd-$i" in_node "$i" containerd --config "$nd/containerd.toml"
  wait_for "containerd on node $i" 60 ctr --address "$(node_sock "$i")" version
  # The sandbox image, under the exact name containerd asks for.
  ctr --address "$(node_sock "$i")" -n k8s.io images import "$DIR/images/pause.oci.tar" >/dev/null

  local c
  for c in "${CGROUP_CONTROLLERS[@]}"; do
    [[ -d "/sys/fs/cgroup/$c" ]] && mkdir -p "/sys/fs/cgroup/$c/$P-n$i"
  done
  cat > "$nd/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$P-n$i
oomScoreAdj: 0
containerRuntimeEndpoint: unix://$(node_sock "$i")
podLogsDir: $nd/pod-logs
volumePluginDir: $nd/volume-plugins
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: AlwaysAllow}
clusterDNS: [$CP_ADDR]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: ""
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
maxPods: 40
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "2%", imagefs.available: "2%", nodefs.inodesFree: "2%"}
failSwapOn: false
serializeImagePulls: false
EOF
  start "kubelet-$i" in_node "$i" "$BIN/kubelet" --config="$nd/kubelet.yaml" --kubeconfig="$nd/kubelet.kubeconfig" \
    --root-dir=/var/lib/kubelet --cert-dir=/var/lib/kubelet/pki --hostname-override="$name" --node-ip="$(node_ip "$i")" --v=1

  cat > "$nd/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: $name
clientConnection: {kubeconfig: $DIR/cp/kube-proxy.kubeconfig}
clusterCIDR: 10.244.0.0/16
# Every Service connection is masqueraded, so replies come back through the node even between
# two pods on one bridge (this host's bridges do not pass traffic through iptables).
iptables: {masqueradeAll: true}
# 0: leave the host's conntrack settings alone.
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
EOF
  start "kube-proxy-$i" in_ns "$ns" "$BIN/kube-proxy" --config="$nd/kube-proxy.yaml"
}

# Storage for claims without a class (no provisioner here): a few hostPath volumes in the cluster dir.
volumes() {
  local v
  for v in 1 2 3 4; do
    mkdir -p "$DIR/volumes/pv$v"; chmod 0777 "$DIR/volumes/pv$v"
    kubectl_ apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: local-$v}
spec:
  capacity: {storage: 2Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  hostPath: {path: $DIR/volumes/pv$v, type: Directory}
EOF
  done
}

# ---------------------------------------------------------------- commands

cmd_up() {
  [[ -e "$DIR/state" ]] && die "$DIR already holds a cluster (run down first)"
  binaries
  mkdir -p "$DIR/images"
  echo "$NODES" > "$DIR/nodes-count"
  # For tools that reach pods: the network namespace that routes to every node's pods.
  echo "$CP_NS" > "$DIR/cp-netns"
  echo "up" > "$DIR/state"
  # Only the script itself tears down, not a subshell whose command failed (errtrace reaches them).
  trap '[[ $BASHPID == "$$" ]] && { log "up failed; tearing down"; cmd_down || true; }' ERR
  pki
  local i
  for ((i = 1; i <= NODES; i++)); do mkdir -p "$(node_dir "$i")"; done
  "$NODE_BIN" "$REPO/src/testenv/images.ts" pause "$DIR/images/pause.oci.tar" >/dev/null
  network
  control_plane
  for ((i = 1; i <= NODES; i++)); do node_up "$i"; done
  local deadline=$((SECONDS + 180)) ready
  while :; do
    ready="$(kubectl_ get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c True || true)"
    (( ready == NODES )) && break
    (( SECONDS < deadline )) || die "only $ready of $NODES nodes became Ready (logs in $DIR/logs)"
    sleep 2
  done
  wait_for "the default ServiceAccount" 60 kubectl_ get serviceaccount default -n default
  volumes
  trap - ERR
  log "$NODES nodes Ready; KUBECONFIG=$DIR/kubeconfig"
}

cmd_images() {
  local n i img
  n="$(cat "$DIR/nodes-count")"
  for img in "$@"; do
    [[ -f "$img" ]] || die "no such image archive: $img"
    for ((i = 1; i <= n; i++)); do
      ctr --address "$(node_sock "$i")" -n k8s.io images import --no-unpack=false "$img" >/dev/null \
        || die "node $i could not import $img"
    done
    log "imported $(basename "$img") into $n nodes"
  done
}

stop_pid() {
  local f="$1" pid
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local k
    for ((k = 0; k < 50; k++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

cmd_down() {
  [[ -d "$DIR" ]] || return 0
  local n=0 i
  [[ -f "$DIR/nodes-count" ]] && n="$(cat "$DIR/nodes-count")"
  # Pods first, while the kubelets still run, so their containers, mounts and netns go the normal way.
  if [[ -f "$DIR/kubeconfig" ]] && [[ -f "$DIR/pids/kubelet-1.pid" ]] && BIN="$(bash "$REPO/scripts/testenv/build-binaries.sh" cluster 2>/dev/null | tail -n1)"; then
    timeout 60 "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" delete pods --all -A --grace-period=1 --wait=true --request-timeout=20s >/dev/null 2>&1 || true
  fi
  local p
  for p in kube-proxy kubelet; do for ((i = 1; i <= n; i++)); do stop_pid "$DIR/pids/$p-$i.pid"; done; done
  # What the kubelets could not stop: every container of every node.
  for ((i = 1; i <= n; i++)); do
    local sock; sock="$(node_sock "$i")"
    if [[ -S "$sock" ]]; then
      local t
      for t in $(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
        ctr --address "$sock" -n k8s.io tasks kill -s KILL "$t" >/dev/null 2>&1 || true
      done
      sleep 1
      for t in $(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do ctr --address "$sock" -n k8s.io tasks delete -f "$t" >/dev/null 2>&1 || true; done
    fi
    stop_pid "$DIR/pids/containerd-$i.pid"
  done
  # containerd's shims outlive it; their command lines name this node's state dir.
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $RUN/" 2>/dev/null || true
  sleep 0.5
  # The last process of a node's mount namespace: with it go the namespace's mounts.
  for ((i = 1; i <= n; i++)); do stop_pid "$DIR/pids/mountns-$i.pid"; done
  for p in coredns kube-scheduler kube-controller-manager api-forward kube-apiserver etcd; do stop_pid "$DIR/pids/$p.pid"; done
  # Mounts under the cluster dir and the run dir, deepest first.
  local m
  while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(awk -v d="$DIR/" -v r="$RUN/" '$5 ~ "^"d || $5 ~ "^"r || $5 == substr(d, 1, length(d)-1) { print $5 }' /proc/self/mountinfo | sort -r)
  # Pod network namespaces were mounted in the nodes' mount namespaces, gone now; the files
  # they were mounted on stay on /run (a pod network namespace of the host would still be a mount).
  for m in /run/netns/cni-*; do
    [[ -e "$m" ]] || continue
    mountpoint -q "$m" || rm -f "$m"
  done
  ip netns del "$CP_NS" 2>/dev/null || true
  for ((i = 1; i <= n; i++)); do ip netns del "$(node_ns "$i")" 2>/dev/null || true; done
  # Cgroups, depth first (a cgroup goes once it is empty).
  local c
  for c in "${CGROUP_CONTROLLERS[@]}" "${CGROUP_ALSO[@]}"; do
    for ((i = 1; i <= n; i++)); do
      [[ -d "/sys/fs/cgroup/$c/$P-n$i" ]] && find "/sys/fs/cgroup/$c/$P-n$i" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
  done
  rm -rf "$RUN"
  # /run/netns as the first up found it, once no namespace is left in it (another cluster may still use it).
  if [[ -f "$NETNS_MARK" && -z "$(ls -A /run/netns 2>/dev/null)" ]]; then
    if grep -q mount "$NETNS_MARK"; then umount /run/netns 2>/dev/null || true; fi
    if grep -q dir "$NETNS_MARK"; then rmdir /run/netns 2>/dev/null || true; fi
    rm -f "$NETNS_MARK"
  fi
  rm -rf "$DIR"
  log "down: $DIR removed"
}

main() {
  local cmd="${1:-}"; shift || true
  [[ -n "$cmd" && -n "${1:-}" ]] || usage
  [[ "$(id -u)" == 0 ]] || die "needs root (network namespaces, mounts, containerd)"
  setup_names "$1"; shift
  NODES=2
  case "$cmd" in
    up)
      while (($#)); do
        case "$1" in
          --nodes) NODES="$2"; shift 2 ;;
          --nodes=*) NODES="${1#*=}"; shift ;;
          *) die "unknown flag $1" ;;
        esac
      done
      [[ "$NODES" =~ ^[1-9]$ ]] || die "--nodes takes 1 to 9"
      cmd_up ;;
    images) (($#)) || usage; cmd_images "$@" ;;
    down) cmd_down ;;
    *) usage ;;
  esac
}

main "$@"
