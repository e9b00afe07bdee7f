#!/bin/sh
# Builds the test doubles used by pilotlight's vSphere tests (idempotent):
#   - pilotlight-vcsim: govmomi's vCenter simulator with a tiny launcher
#     (test/support/vcsim), built offline from Debian's golang-github-vmware-govmomi-dev
#     in GOPATH mode;
#   - a FAKE libvixDiskLib.so (test/support/fake-vddk), a test double with VDDK 7/8's ABI.
# Output goes to the cache directory printed on the last line
# (default ${XDG_CACHE_HOME:-$HOME/.cache}/pilotlight-vsphere-test, or $PILOTLIGHT_VSPHERE_CACHE).
# Installs golang-go and golang-github-vmware-govmomi-dev with apt-get when missing.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${PILOTLIGHT_VSPHERE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pilotlight-vsphere-test}
GOVMOMI=/usr/share/gocode/src/github.com/vmware/govmomi/simulator
mkdir -p "$CACHE/bin" "$CACHE/fake-vddk/lib64" "$CACHE/gopath"

# Test files run in parallel and each calls this script: one at a time.
if command -v flock >/dev/null 2>&1 && [ -z "${PILOTLIGHT_VSPHERE_SETUP_LOCKED:-}" ]; then
  export PILOTLIGHT_VSPHERE_SETUP_LOCKED=1
  exec flock "$CACHE/.setup.lock" sh "$0" "$@"
fi

if ! command -v go >/dev/null 2>&1 || [ ! -d "$GOVMOMI" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "vsphere-test-setup: golang-go and golang-github-vmware-govmomi-dev are missing; run as root or: sudo apt-get install -y golang-go golang-github-vmware-govmomi-dev" >&2
    exit 1
  fi
  echo "vsphere-test-setup: installing golang-go golang-github-vmware-govmomi-dev" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y golang-go golang-github-vmware-govmomi-dev >&2 || {
    apt-get update >&2 && apt-get install -y golang-go golang-github-vmware-govmomi-dev >&2
  }
fi

# newer SRC TARGET: true when TARGET is missing or older than SRC
newer() { [ ! -e "$2" ] || [ -n "$(find "$1" -newer "$2" -print -quit)" ]; }

VCSIM_SRC="$ROOT/test/support/vcsim/main.go"
VCSIM_BIN="$CACHE/bin/pilotlight-vcsim"
if newer "$VCSIM_SRC" "$VCSIM_BIN"; then
  echo "vsphere-test-setup: building the vcsim launcher (about 30 s the first time)" >&2
  (cd "$ROOT" && GO111MODULE=off GOFLAGS= GOPATH="$CACHE/gopath:/usr/share/gocode" \
    GOCACHE="$CACHE/gocache" go build -o "$VCSIM_BIN.tmp.$$" ./test/support/vcsim)
  mv "$VCSIM_BIN.tmp.$$" "$VCSIM_BIN"
fi

VDDK_SRC="$ROOT/test/support/fake-vddk/fake-vddk.c"
VDDK_LIB="$CACHE/fake-vddk/lib64/libvixDiskLib.so"
if newer "$VDDK_SRC" "$VDDK_LIB"; then
  echo "vsphere-test-setup: building the fake VDDK library (test double)" >&2
  gcc -shared -fPIC -O2 -Wall -Werror -o "$VDDK_LIB.tmp.$$" "$VDDK_SRC" -lpthread
  mv "$VDDK_LIB.tmp.$$" "$VDDK_LIB"
fi

echo "$CACHE"
