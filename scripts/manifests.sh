#!/usr/bin/env bash
# Generates the raw manifests in deploy/ from the Helm chart, the one source of truth:
#
#   deploy/chart/classcache/crds/<f>             -> deploy/crds/<f>
#   deploy/chart/classcache/templates/<dir>/<f>  -> deploy/<dir>/<f>   (rbac/, operator/, csi/)
#
# with `helm template` and the chart's default values, plus createNamespace=true (so that
# deploy/rbac/00-namespace.yaml holds the namespace for `kubectl apply -f deploy/...`).
# Edit the chart, then run this; test/chart.test.ts fails when deploy/ and the chart differ.
#
#   scripts/manifests.sh             # rewrites deploy/crds, deploy/rbac, deploy/operator, deploy/csi
#   scripts/manifests.sh --out DIR   # writes DIR/crds, DIR/rbac, DIR/operator instead
#
# Helm: $HELM if set, else the one scripts/testenv/build-binaries.sh helm builds (and caches).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CHART="$ROOT/deploy/chart/classcache"
OUT="$ROOT/deploy"
case "${1:-}" in
  "") ;;
  --out) OUT="${2:?--out needs a directory}" ;;
  *) printf 'usage: %s [--out DIR]\n' "$0" >&2; exit 2 ;;
esac

HELM="${HELM:-}"
if [[ -z "$HELM" ]]; then
  HELM="$(bash "$ROOT/scripts/testenv/build-binaries.sh" helm | tail -n 1)/helm"
fi

rendered="$(mktemp)"
trap 'rm -f "$rendered"' EXIT
"$HELM" template classcache "$CHART" --namespace classcache-system --include-crds \
  --set createNamespace=true >"$rendered"

for d in crds rbac operator csi; do
  mkdir -p "$OUT/$d"
  rm -f "$OUT/$d"/*.yaml
done

# helm prints each document as "---", "# Source: <chart>/<path>", the document, blank lines.
# Documents of one source go to one file, in helm's order (by kind: helm sorts them for install).
awk -v out="$OUT" '
  function flush(   n, i) {
    if (file == "") return
    n = count
    while (n > 0 && lines[n] ~ /^[[:space:]]*$/) n--
    if (!(file in seen)) {
      seen[file] = 1
      print "# Generated from deploy/chart/classcache by scripts/manifests.sh (helm template, default" > file
      print "# values): edit the chart, not this file." > file
    } else {
      print "---" > file
    }
    for (i = 1; i <= n; i++) print lines[i] > file
    count = 0
  }
  /^---$/ { next }
  /^# Source: / {
    flush()
    path = substr($0, 11)
    if (path ~ /^classcache\/crds\/[^\/]+\.yaml$/) sub(/^classcache\//, "", path)
    else if (path ~ /^classcache\/templates\/(rbac|operator|csi)\/[^\/]+\.yaml$/) sub(/^classcache\/templates\//, "", path)
    else { printf "manifests.sh: no place in deploy/ for %s\n", path > "/dev/stderr"; failed = 1; exit 1 }
    file = out "/" path
    next
  }
  { lines[++count] = $0 }
  END { if (!failed) flush() }
' "$rendered"
printf 'manifests.sh: wrote %s/{crds,rbac,operator,csi} from %s\n' "$OUT" "${CHART#"$ROOT"/}" >&2
