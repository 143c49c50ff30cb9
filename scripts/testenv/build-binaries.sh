#!/usr/bin/env bash
# Builds Kubernetes binaries from source with Go and caches them per version.
#
#   scripts/testenv/build-binaries.sh            # kube-apiserver + etcd (the API-server test tier)
#   scripts/testenv/build-binaries.sh cluster    # kubelet, kube-controller-manager, kube-scheduler,
#                                                # kube-proxy, kubectl, coredns (the real-cluster tier)
#   scripts/testenv/build-binaries.sh helm       # helm
# Each prints its bin dir as the last line of stdout.
#
# Environment:
#   CLASSCACHE_KUBE_VERSION  k8s.io/kubernetes release to build (default below)
#   CLASSCACHE_ETCD_VERSION  go.etcd.io/etcd/server/v3 release to build (default below)
#   CLASSCACHE_HELM_VERSION  helm.sh/helm/v4 release to build (default below)
#   CLASSCACHE_CACHE         cache root (default: $HOME/.cache/classcache)
#
# Only the bin dir goes to stdout; progress and Go output go to stderr.
set -euo pipefail

KUBE_VERSION="${CLASSCACHE_KUBE_VERSION:-v1.36.3}"
ETCD_VERSION="${CLASSCACHE_ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${CLASSCACHE_HELM_VERSION:-v4.3.2}"
COREDNS_VERSION="${CLASSCACHE_COREDNS_VERSION:-v1.14.7}"
CACHE_ROOT="${CLASSCACHE_CACHE:-$HOME/.cache/classcache}"
SET="${1:-control-plane}"
CLUSTER_CMDS=(kubelet kube-controller-manager kube-scheduler kube-proxy kubectl)

case "$SET" in
  control-plane) OUT_DIR="$CACHE_ROOT/kube/${KUBE_VERSION#v}-etcd${ETCD_VERSION#v}" ;;
  cluster) OUT_DIR="$CACHE_ROOT/kube/${KUBE_VERSION#v}-cluster" ;;
  helm) OUT_DIR="$CACHE_ROOT/kube/helm-${HELM_VERSION#v}" ;;
  *) printf 'build-binaries: unknown set %s (control-plane, cluster or helm)\n' "$SET" >&2; exit 2 ;;
esac
BIN_DIR="$OUT_DIR/bin"

# Temp dirs of a build in progress, removed on exit (globals: the EXIT trap runs after main returns).
WORK_DIR=""
STAGING_DIR=""
cleanup() { rm -rf ${WORK_DIR:+"$WORK_DIR"} ${STAGING_DIR:+"$STAGING_DIR"}; }

log() { printf 'build-binaries: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

have_binaries() {
  case "$SET" in
    control-plane) [[ -x "$BIN_DIR/kube-apiserver" && -x "$BIN_DIR/etcd" ]] ;;
    cluster) local c; for c in "${CLUSTER_CMDS[@]}" coredns; do [[ -x "$BIN_DIR/$c" ]] || return 1; done ;;
    helm) [[ -x "$BIN_DIR/helm" ]] ;;
  esac
}

# Prints the entries of one go.mod directive (require, replace, ...), one per
# line, for both the block form and the single-line form; comments stripped.
mod_entries() {
  local file="$1" directive="$2"
  awk -v d="$directive" '
    { sub(/\/\/.*/, "") }
    $1 == d && $2 == "(" { inblock = 1; next }
    inblock && $1 == ")" { inblock = 0; next }
    inblock { if (NF) print; next }
    $1 == d && NF > 1 { $1 = ""; sub(/^ +/, ""); print }
  ' "$file"
}

# Modules that the go.mod both requires and replaces with a local directory:
# the staging modules (kubernetes) or sibling modules (etcd). Those local
# replaces are ignored for a dependency, so the wrapper has to pin each one to
# its published tag. Replaces of modules the release does not require (e.g.
# etcd's FORBIDDEN_DEPENDENCY guards) are left out on purpose.
local_replaced_requirements() {
  local file="$1"
  local replaced required
  replaced="$(mod_entries "$file" replace | awk '{
      for (i = 1; i < NF; i++) if ($i == "=>") { if ($(i + 1) ~ /^\.\.?\//) print $1; break }
    }' | sort -u)"
  required="$(mod_entries "$file" require | awk '{ print $1 }' | sort -u)"
  comm -12 <(printf '%s\n' "$replaced") <(printf '%s\n' "$required")
}

# Downloads module@version into the module cache and prints the path of its go.mod.
module_gomod() {
  local json
  json="$(go mod download -json "$1")" || die "cannot download $1: $json"
  printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p'
}

# Creates a wrapper module in $1 that requires $2@$3 and pins every module in
# the remaining arguments (each "path version") via replace.
write_wrapper() {
  local dir="$1" module="$2" version="$3"
  shift 3
  mkdir -p "$dir"
  (
    cd "$dir"
    go mod init classcache.local/testenv-build >/dev/null 2>&1
    go mod edit -require="$module@$version"
    local pin
    for pin in "$@"; do
      go mod edit -replace="${pin% *}=${pin% *}@${pin#* }"
    done
  )
}

# Builds the k8s.io/kubernetes commands named after $2 into $2 (kube-apiserver by default).
build_kube() {
  local work="$1" dest="$2"
  shift 2
  local cmds=("${@:-kube-apiserver}")
  local gomod minor pins=() mod
  log "kube-apiserver $KUBE_VERSION: resolving k8s.io/kubernetes"
  gomod="$(module_gomod "k8s.io/kubernetes@$KUBE_VERSION")"
  [[ -f "$gomod" ]] || die "no go.mod for k8s.io/kubernetes@$KUBE_VERSION"
  # Staging modules are published as v0.<minor>.<patch> for kubernetes v1.<minor>.<patch>.
  local staging_version="v0.${KUBE_VERSION#v1.}"
  while read -r mod; do
    [[ -n "$mod" ]] && pins+=("$mod $staging_version")
  done < <(local_replaced_requirements "$gomod")
  (( ${#pins[@]} > 0 )) || die "found no staging modules in $gomod"
  log "kube-apiserver: pinning ${#pins[@]} staging modules to $staging_version"
  write_wrapper "$work/kube" k8s.io/kubernetes "$KUBE_VERSION" "${pins[@]}"

  minor="${KUBE_VERSION#v1.}"
  minor="${minor%%.*}"
  local build_date ldflags="-s -w" pkg
  build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
  done
  local pkgs=() c
  for c in "${cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  log "${cmds[*]}: building (this is the slow part)"
  (cd "$work/kube" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "$ldflags" \
    -o "$dest/" "${pkgs[@]}")
}

build_helm() {
  local work="$1" dest="$2"
  log "helm $HELM_VERSION
coredns $COREDNS_VERSION: building"
  mkdir -p "$work/helm"
  (
    cd "$work/helm"
    go mod init classcache.local/helm-build >/dev/null 2>&1
    go mod edit -require="helm.sh/helm/v4@$HELM_VERSION"
    CGO_ENABLED=0 go build -mod=mod -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" \
      -o "$dest/helm" helm.sh/helm/v4/cmd/helm
  )
}

build_etcd() {
  local work="$1" dest="$2"
  local gomod pins=() mod
  log "etcd $ETCD_VERSION: resolving go.etcd.io/etcd/server/v3"
  gomod="$(module_gomod "go.etcd.io/etcd/server/v3@$ETCD_VERSION")"
  [[ -f "$gomod" ]] || die "no go.mod for go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  while read -r mod; do
    [[ -n "$mod" ]] && pins+=("$mod $ETCD_VERSION")
  done < <(local_replaced_requirements "$gomod")
  log "etcd: pinning ${#pins[@]} sibling modules to $ETCD_VERSION"
  write_wrapper "$work/etcd" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "${pins[@]}"
  log "etcd: building"
  (cd "$work/etcd" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "-s -w" \
    -o "$dest/etcd" go.etcd.io/etcd/server/v3)
}

main() {
  if have_binaries; then
    printf '%s\n' "$BIN_DIR"
    exit 0
  fi
  command -v go >/dev/null || die "go is not on PATH"
  mkdir -p "$CACHE_ROOT/kube"

  # Serialise concurrent builds of the same versions; whoever waited re-checks.
  if command -v flock >/dev/null; then
    exec 9>"$OUT_DIR.lock"
    flock 9
  fi
  if have_binaries; then
    printf '%s\n' "$BIN_DIR"
    exit 0
  fi

  local start=$SECONDS
  trap cleanup EXIT
  WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/classcache-kube-build.XXXXXX")"
  # The staging dir sits next to OUT_DIR so the final rename stays on one filesystem.
  STAGING_DIR="$(mktemp -d "$CACHE_ROOT/kube/.building.XXXXXX")"
  chmod 755 "$STAGING_DIR"
  mkdir -p "$STAGING_DIR/bin"
  local work="$WORK_DIR" staging="$STAGING_DIR"

  export GOWORK=off
  local reported
  case "$SET" in
    control-plane)
      build_etcd "$work" "$staging/bin"
      build_kube "$work" "$staging/bin" kube-apiserver
      "$staging/bin/etcd" --version >&2
      reported="$("$staging/bin/kube-apiserver" --version)"
      log "kube-apiserver --version: $reported"
      [[ "$reported" == "Kubernetes $KUBE_VERSION" ]] || die "the version stamp did not take (expected Kubernetes $KUBE_VERSION)"
      ;;
    cluster)
      build_kube "$work" "$staging/bin" "${CLUSTER_CMDS[@]}"
      log "coredns $COREDNS_VERSION: building"
      (cd "$work" && CGO_ENABLED=0 GOBIN="$staging/bin" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION")
      reported="$("$staging/bin/kubelet" --version)"
      log "kubelet --version: $reported"
      [[ "$reported" == "Kubernetes $KUBE_VERSION" ]] || die "the version stamp did not take (expected Kubernetes $KUBE_VERSION)"
      ;;
    helm)
      build_helm "$work" "$staging/bin"
      reported="$("$staging/bin/helm" version --template '{{.Version}}')"
      log "helm version: $reported"
      [[ "$reported" == "$HELM_VERSION" ]] || die "the version stamp did not take (expected $HELM_VERSION)"
      ;;
  esac
  cat >"$staging/versions.txt" <<EOF
set $SET
kubernetes $KUBE_VERSION
etcd $ETCD_VERSION
helm $HELM_VERSION
coredns $COREDNS_VERSION
go $(go env GOVERSION)
built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - start)) s
EOF
  rm -rf "$OUT_DIR" # only a leftover without binaries can be here
  mv -T "$staging" "$OUT_DIR"
  log "built in $((SECONDS - start)) s"
  printf '%s\n' "$BIN_DIR"
}

main "$@"
