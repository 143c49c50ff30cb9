#!/usr/bin/env bash
# Builds kube-apiserver and etcd from source with Go and caches them per version.
#
#   scripts/testenv/build-binaries.sh          # prints the bin dir as the last line of stdout
#
# Environment:
#   CLASSCACHE_KUBE_VERSION  k8s.io/kubernetes release to build (default below)
#   CLASSCACHE_ETCD_VERSION  go.etcd.io/etcd/server/v3 release to build (default below)
#   CLASSCACHE_CACHE         cache root (default: $HOME/.cache/classcache)
#
# Only the bin dir goes to stdout; progress and Go output go to stderr.
set -euo pipefail

KUBE_VERSION="${CLASSCACHE_KUBE_VERSION:-v1.36.3}"
ETCD_VERSION="${CLASSCACHE_ETCD_VERSION:-v3.6.16}"
CACHE_ROOT="${CLASSCACHE_CACHE:-$HOME/.cache/classcache}"

OUT_DIR="$CACHE_ROOT/kube/${KUBE_VERSION#v}-etcd${ETCD_VERSION#v}"
BIN_DIR="$OUT_DIR/bin"

# Temp dirs of a build in progress, removed on exit (globals: the EXIT trap runs after main returns).
WORK_DIR=""
STAGING_DIR=""
cleanup() { rm -rf ${WORK_DIR:+"$WORK_DIR"} ${STAGING_DIR:+"$STAGING_DIR"}; }

log() { printf 'build-binaries: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

have_binaries() { [[ -x "$BIN_DIR/kube-apiserver" && -x "$BIN_DIR/etcd" ]]; }

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

build_kube_apiserver() {
  local work="$1" dest="$2"
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
  log "kube-apiserver: building (this is the slow part)"
  (cd "$work/kube" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "$ldflags" \
    -o "$dest/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
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
  build_etcd "$work" "$staging/bin"
  build_kube_apiserver "$work" "$staging/bin"

  "$staging/bin/etcd" --version >&2
  local reported
  reported="$("$staging/bin/kube-apiserver" --version)"
  log "kube-apiserver --version: $reported"
  [[ "$reported" == "Kubernetes $KUBE_VERSION" ]] || die "the version stamp did not take (expected Kubernetes $KUBE_VERSION)"
  cat >"$staging/versions.txt" <<EOF
kubernetes $KUBE_VERSION
etcd $ETCD_VERSION
go $(go env GOVERSION)
built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - start)) s
EOF
  rm -rf "$OUT_DIR" # only a leftover without binaries can be here
  mv -T "$staging" "$OUT_DIR"
  log "built in $((SECONDS - start)) s"
  printf '%s\n' "$BIN_DIR"
}

main "$@"
