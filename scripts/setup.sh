#!/bin/sh
# Set-up of a fresh machine, idempotent and quick when nothing is missing: the system packages
# the tests and the demo use, then Node 24 and the npm packages (npm ci). `npm test` and
# `npm run demo` run this first.
set -eu
cd "$(dirname "$0")/.."

missing=""
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
command -v mvn >/dev/null 2>&1 || missing="$missing maven"
command -v unshare >/dev/null 2>&1 || missing="$missing util-linux"
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
# The real-cluster tier (scripts/cluster/cluster.sh): a container runtime, its CNI plugins, the
# API forwarder, and what the test images are made of (a static busybox, a static pause).
command -v containerd >/dev/null 2>&1 || missing="$missing containerd"
command -v runc >/dev/null 2>&1 || missing="$missing runc"
[ -x /usr/lib/cni/bridge ] || missing="$missing containernetworking-plugins"
command -v socat >/dev/null 2>&1 || missing="$missing socat"
command -v conntrack >/dev/null 2>&1 || missing="$missing conntrack"
command -v iptables >/dev/null 2>&1 || missing="$missing iptables"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
[ -x /bin/busybox ] || missing="$missing busybox-static"
{ command -v gcc >/dev/null 2>&1 && [ -f /usr/lib/"$(uname -m)"-linux-gnu/libc.a ]; } || missing="$missing gcc libc6-dev"
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing$missing" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  else
    echo "setup: please install:$missing (e.g. sudo apt-get install$missing)" >&2
    exit 1
  fi
fi

if ! ls /usr/lib/jvm/*/bin/java >/dev/null 2>&1 && [ -z "${JAVA_HOME:-}" ] && ! command -v java >/dev/null 2>&1; then
  echo "setup: no JDK found; install a JDK 17+ (e.g. apt-get install openjdk-17-jdk) or set JAVA_HOME" >&2
  exit 1
fi

# Node 24 comes from the npm package `node` (node_modules/.bin/node), which npm scripts use.
if [ ! -x node_modules/.bin/node ] || [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
