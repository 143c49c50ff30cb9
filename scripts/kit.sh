#!/bin/sh
# Assembles the classcache runtime as one self-contained directory — what the container image
# keeps at /opt/classcache and what build Jobs copy into the workload's own image:
#   bin/classcache   the entry point (a POSIX sh wrapper)
#   bin/node         Node 24 (the project's pinned `node` package: glibc, linux)
#   lib/             the C library Node links against, with its loader as lib/ld.so: build Jobs run
#                    `lib/ld.so --library-path lib bin/node app/src/cli.ts build …` in the workload's
#                    own image, which may have no glibc (Alpine) and no shell (distroless)
#   app/             the sources and the production dependencies
#   cache/tools/     the capture agent, the pods' jar check and the launch probe, compiled ahead
#                    (no javac needed in build Jobs' images, nor in the classcache image)
#   probe/launch-probe.jar  the launch probe again, under the fixed name build Jobs name it by
#                    (-javaagent in the probe init container, src/operator/objects/buildjob.ts)
# Usage: sh scripts/kit.sh <dir>   (replaces <dir> atomically; needs a JDK with javac)
set -eu
out=${1:?usage: scripts/kit.sh <dir>}
cd "$(dirname "$0")/.."
repo=$(pwd)
tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/bin" "$tmp/app" "$tmp/cache/tools" "$tmp/probe"
trap 'rm -rf "$tmp"' EXIT

cp node_modules/node/bin/node "$tmp/bin/node"
# Node's shared libraries and its ELF interpreter, as ldd lists them ("name => /path (addr)" and
# "/path/ld-linux-….so.N (addr)"). The loader runs under any name: lib/ld.so, whatever the arch.
mkdir -p "$tmp/lib"
ldd "$tmp/bin/node" | while read -r first second third _; do
  case "$second" in
    "=>") [ -f "$third" ] && cp -L "$third" "$tmp/lib/" ;;
    *) case "$first" in /*) cp -L "$first" "$tmp/lib/ld.so" ;; esac ;;
  esac
done
[ -x "$tmp/lib/ld.so" ] || { echo "kit: no ELF interpreter found for bin/node (ldd)" >&2; exit 1; }
cp -R src package.json package-lock.json "$tmp/app/"
# Nothing that only tests or benchmarks use ships: the test environments, the test doubles and
# the directory conformance suite (which imports node:test).
find "$tmp/app/src" -name '*.test.ts' -delete
rm -rf "$tmp/app/src/testenv" "$tmp/app/src/kube/testing" "$tmp/app/src/p2p/testing.ts" "$tmp/app/src/directory/conformance.ts"
(cd "$tmp/app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error)
CLASSCACHE_CACHE="$tmp/cache" "$repo/node_modules/.bin/node" --input-type=module -e \
  "const m = await import('$repo/src/build/capture.ts'); await m.captureAgentJar('');
   const p = await import('$repo/src/node/podinit.ts'); await p.jarCheckJar();
   const q = await import('$repo/src/build/probe.ts'); const fs = await import('node:fs/promises');
   await fs.copyFile(await q.launchProbeJar(), '$tmp/' + q.KIT_PROBE_JAR);"

cat > "$tmp/bin/classcache" <<'SH'
#!/bin/sh
# classcache from a kit directory: its own Node through its own loader and C library (an
# image may have neither), its own sources, its precompiled tools.
here=$(cd "$(dirname "$0")/.." && pwd)
export CLASSCACHE_CACHE="${CLASSCACHE_CACHE:-$here/cache}"
exec "$here/lib/ld.so" --library-path "$here/lib" "$here/bin/node" "$here/app/src/cli.ts" "$@"
SH
chmod 0755 "$tmp/bin/classcache" "$tmp/bin/node"

rm -rf "$out"
mv "$tmp" "$out"
trap - EXIT
echo "$out"
