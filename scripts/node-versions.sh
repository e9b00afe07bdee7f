#!/usr/bin/env bash
# The supported Node majors other than the one installed (README: 20, 22, 24): fetches
# each one's official Linux build from the npm registry (node-linux-<arch>@<major>, the
# package the `node` npm package installs), then runs with it the main job
# (scripts/demo.sh: init, backup, incremental, two restores compared byte for byte,
# verify --read-data) and the repository-format and snapshot unit tests. The native
# dependencies are N-API builds, so the node_modules installed for Node 20 serve all.
#
#   bash scripts/node-versions.sh [MAJOR ...]      (default: 22 24; after npm install + tsc)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${PILOTLIGHT_NODES_DIR:-/tmp/pilotlight-nodes}"
case "$(uname -m)" in x86_64) arch=x64 ;; aarch64) arch=arm64 ;; *) echo "node-versions.sh: no Node build for $(uname -m)" >&2; exit 1 ;; esac
majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(22 24)
for major in "${majors[@]}"; do
  bin="$dir/$major/package/bin"
  if [ ! -x "$bin/node" ]; then
    rm -rf "${dir:?}/$major" && mkdir -p "$dir/$major"
    tgz=""
    for attempt in 1 2 3; do
      tgz=$(cd "$dir/$major" && npm pack --silent "node-linux-$arch@$major" 2>/dev/null | tail -1) && break
      sleep $((attempt * 5))
    done
    [ -n "$tgz" ] || { echo "node-versions.sh: could not fetch node-linux-$arch@$major from the npm registry" >&2; exit 1; }
    tar xzf "$dir/$major/$tgz" -C "$dir/$major"
  fi
  echo "== Node $("$bin/node" --version): the main job"
  PATH="$bin:$PATH" PILOTLIGHT_DEMO_DIR="$dir/demo-$major" bash scripts/demo.sh | tail -4
  rm -rf "${dir:?}/demo-$major"
  echo "== Node $("$bin/node" --version): repository format and snapshot tests"
  PATH="$bin:$PATH" node --test --test-reporter=dot $(find dist/test/repo dist/test/snapshot -name '*.test.js' | sort)
done
