#!/usr/bin/env bash
# A throw-away single-node Ceph RADOS Gateway on loopback, for pilotlight's S3 tests.
#
#   scripts/rgw.sh install   apt-get the Debian packages, only when missing
#   scripts/rgw.sh start     bootstrap (first time) and start mon, osd, radosgw; waits until S3 answers
#   scripts/rgw.sh stop      stop only the daemons this script started (pids under the state dir)
#   scripts/rgw.sh status    exit 0 when radosgw answers S3 requests, 1 otherwise
#   scripts/rgw.sh env       print export lines: endpoint and the test user's keys
#   scripts/rgw.sh clean     stop, then delete the state directory
#   scripts/rgw.sh purge-bucket NAME   delete a bucket and everything in it (test cleanup)
#
# Every command is idempotent. All state (config, mon store, the sparse OSD file, logs,
# pids) lives under $PILOTLIGHT_RGW_DIR (default /tmp/pilotlight-rgw). Ports:
# $PILOTLIGHT_RGW_PORT (S3, default 7480); the monitor uses 127.0.0.1:13300 (msgr2)
# and 127.0.0.1:16789 (msgr1), the OSD binds in 16800-16899. Everything binds to
# 127.0.0.1 only.
#
# Facts this script depends on (Ceph 16.2 "pacific", Debian 12):
# - with `auth ... = none` radosgw never finishes connecting to the monitor unless
#   `ms mon client mode` and `ms client mode` are `crc secure`;
# - the first CreateBucket/PutObject take ~2 s unless `.rgw.root` and the default.rgw.*
#   pools exist beforehand and `paxos propose interval` is small;
# - the monitor refuses to start when the disk looks nearly full unless
#   `mon data avail warn/crit` are lowered.
set -euo pipefail

DIR="${PILOTLIGHT_RGW_DIR:-/tmp/pilotlight-rgw}"
PORT="${PILOTLIGHT_RGW_PORT:-7480}"
# The OSD is a sparse file: only what is written takes disk space. A full OSD makes
# every write block forever, so it is sized well above what a test run writes.
OSD_BYTES="${PILOTLIGHT_RGW_OSD_BYTES:-34359738368}"
MON_V2=13300
MON_V1=16789
ACCESS_KEY="${PILOTLIGHT_RGW_ACCESS_KEY:-PILOTLIGHTTESTKEY000}"
SECRET_KEY="${PILOTLIGHT_RGW_SECRET_KEY:-pilotlight-test-secret-key-0000000000000}"
CONF="$DIR/ceph.conf"
PACKAGES=(radosgw ceph-mon ceph-osd ceph-common)
BINARIES=(radosgw ceph-mon ceph-osd ceph radosgw-admin monmaptool ceph-authtool)
POOLS=(.rgw.root default.rgw.control default.rgw.meta default.rgw.log
       default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec)

log() { echo "rgw.sh: $*" >&2; }
die() { log "$*"; exit 1; }
trap 'log "failed: line $LINENO: $BASH_COMMAND (logs in $DIR/log)"' ERR

missing_binaries() {
  local b out=()
  for b in "${BINARIES[@]}"; do command -v "$b" >/dev/null 2>&1 || out+=("$b"); done
  echo "${out[*]:-}"
}

cmd_install() {
  local miss
  miss="$(missing_binaries)"
  if [ -z "$miss" ]; then
    log "ceph packages already installed ($(ceph-osd --version 2>/dev/null | awk '{print $3}'))"
    return 0
  fi
  log "installing ${PACKAGES[*]} (missing: $miss)"
  [ "$(id -u)" = 0 ] || die "installing packages needs root: run 'sudo bash scripts/rgw.sh install'"
  export DEBIAN_FRONTEND=noninteractive
  # An old or empty package list makes apt-get install fail: refresh it once and retry.
  if ! apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; then
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
  fi
  miss="$(missing_binaries)"
  [ -z "$miss" ] || die "still missing after install: $miss"
}

ceph_() { timeout 60 ceph -c "$CONF" "$@"; }
# Not as client.rgw.a: that name's admin socket belongs to the running radosgw.
radosgw_admin() { timeout 60 radosgw-admin -c "$CONF" -n client.admin "$@" 2>>"$DIR/log/radosgw-admin.log"; }

write_conf() {
  local fsid="$1"
  cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$MON_V2,v1:127.0.0.1:$MON_V1]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind port min = 16800
ms bind port max = 16899
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
ms mon client mode = crc secure
ms client mode = crc secure
ms mon cluster mode = crc secure
ms mon service mode = crc secure
ms cluster mode = crc secure
ms service mode = crc secure
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
log file = $DIR/log/\$name.log
keyring = $DIR/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
paxos propose interval = 0.01
paxos min wait = 0.01
mon osd auto mark in = true
osd objectstore = bluestore
osd memory target = 939524096
bluestore cache autotune = false
bluestore cache size = 134217728
bluestore block create = true
bluestore block size = $OSD_BYTES
bluestore block db create = false
bluestore block wal create = false
osd op num shards = 1
osd op num threads per shard = 2
rgw enable usage log = false
# reclaim deleted objects' space within seconds, not after RGW's default 2 hours
rgw gc obj min wait = 0
rgw gc processor period = 15
rgw gc processor max time = 15
debug ms = 0

[mon.a]
mon data = $DIR/mon

[osd.0]
osd data = $DIR/osd

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$PORT
rgw data = $DIR/rgw
rgw dns name = 127.0.0.1
rgw thread pool size = 64
EOF
}

# pid of a daemon we started, if it is still that daemon.
live_pid() {
  local name="$1" bin="$2" pid
  [ -f "$DIR/run/$name.pid" ] || return 1
  pid="$(cat "$DIR/run/$name.pid" 2>/dev/null)" || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$bin.*-c $CONF" || return 1
  echo "$pid"
}

s3_answers() {
  # radosgw answers an anonymous ListBuckets with XML (an empty list or AccessDenied).
  # Plain bash /dev/tcp, so that curl is not needed on a fresh machine.
  timeout 3 bash -c '
    exec 3<>/dev/tcp/127.0.0.1/'"$PORT"' || exit 1
    printf "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" >&3
    head -c 12 <&3 | grep -q "HTTP/1.1 [24]0[03]"' 2>/dev/null
}

cmd_status() {
  local ok=0 d
  for d in "mon.a:ceph-mon" "osd.0:ceph-osd" "client.rgw.a:radosgw"; do
    if live_pid "${d%%:*}" "${d#*:}" >/dev/null; then :; else ok=1; fi
  done
  if [ $ok = 0 ] && s3_answers; then
    log "running: S3 on http://127.0.0.1:$PORT (state in $DIR)"
    return 0
  fi
  log "not running (state in $DIR)"
  return 1
}

wait_for() {
  local what="$1" secs="$2"; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || die "timed out after ${secs}s waiting for $what; see logs in $DIR/log"
    sleep 0.2
  done
}

osd_up() { ceph_ osd dump --format json | grep -q '"up":1'; }

start_mon() {
  live_pid mon.a ceph-mon >/dev/null && return 0
  ceph-mon -c "$CONF" -i a 9>&- 2>>"$DIR/log/mon.a.stderr"
  wait_for "the monitor" 60 ceph_ mon stat
}

start_osd() {
  live_pid osd.0 ceph-osd >/dev/null && return 0
  ceph-osd -c "$CONF" -i 0 9>&- 2>>"$DIR/log/osd.0.stderr"
  wait_for "the OSD to come up" 90 osd_up
}

start_rgw() {
  live_pid client.rgw.a radosgw >/dev/null && return 0
  radosgw -c "$CONF" -n client.rgw.a 9>&- 2>>"$DIR/log/client.rgw.a.stderr"
  wait_for "radosgw to answer on 127.0.0.1:$PORT" 90 s3_answers
}

bootstrap() {
  log "bootstrapping a new cluster in $DIR"
  rm -rf "$DIR/mon" "$DIR/osd" "$DIR/rgw" "$DIR/run" "$DIR/log"
  mkdir -p "$DIR/mon" "$DIR/osd" "$DIR/rgw" "$DIR/run" "$DIR/log"
  local fsid osd_uuid
  fsid="$(cat /proc/sys/kernel/random/uuid)"
  osd_uuid="$(cat /proc/sys/kernel/random/uuid)"
  write_conf "$fsid"
  ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$MON_V2,v1:127.0.0.1:$MON_V1]" "$DIR/monmap" >/dev/null
  ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keyring"
  start_mon
  ceph_ osd new "$osd_uuid" 0 >/dev/null
  ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" 2>>"$DIR/log/osd-mkfs.log"
  start_osd
  local p
  for p in "${POOLS[@]}"; do
    ceph_ osd pool create "$p" 8 8 >/dev/null 2>&1
    ceph_ osd pool application enable "$p" rgw >/dev/null 2>&1
  done
  start_rgw
  # A second storage class, so that tests can see --storage-class applied to data packs.
  # The default zonegroup and zone exist only once radosgw has run: add it, then restart.
  radosgw_admin zonegroup placement add --rgw-zonegroup default --placement-id default-placement \
    --storage-class STANDARD_IA >/dev/null
  radosgw_admin zone placement add --rgw-zone default --placement-id default-placement \
    --storage-class STANDARD_IA --data-pool default.rgw.buckets.data >/dev/null
  stop_daemon client.rgw.a radosgw
  start_rgw
  radosgw_admin user create --uid=pilotlight-test --display-name="pilotlight tests" \
    --access-key="$ACCESS_KEY" --secret="$SECRET_KEY" >/dev/null
  touch "$DIR/bootstrapped"
}

cmd_start() {
  command -v radosgw >/dev/null 2>&1 || die "radosgw is not installed: run 'bash scripts/rgw.sh install' (as root)"
  if cmd_status 2>/dev/null; then cmd_status; return 0; fi
  mkdir -p "$DIR"
  # Several test files may ask for the server at once: one starter at a time.
  # (The daemons must not inherit this descriptor, or they would hold the lock.)
  exec 9>"$DIR/.lock"
  flock -w 300 9 || die "another 'rgw.sh start' holds $DIR/.lock"
  if cmd_status 2>/dev/null; then return 0; fi
  local t0=$SECONDS
  if [ -f "$DIR/bootstrapped" ] && [ -f "$CONF" ]; then
    mkdir -p "$DIR/run" "$DIR/log"
    start_mon
    start_osd
    start_rgw
  else
    cmd_stop_daemons
    bootstrap
  fi
  log "started in $((SECONDS - t0))s: S3 on http://127.0.0.1:$PORT (state in $DIR)"
}

stop_daemon() {
  local name="$1" bin="$2" pid
  pid="$(live_pid "$name" "$bin")" || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
  if [ -d "/proc/$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$DIR/run/$name.pid"
  log "stopped $name (pid $pid)"
}

cmd_stop_daemons() {
  stop_daemon client.rgw.a radosgw
  stop_daemon osd.0 ceph-osd
  stop_daemon mon.a ceph-mon
}

cmd_stop() {
  [ -d "$DIR" ] || { log "nothing to stop ($DIR does not exist)"; return 0; }
  cmd_stop_daemons
}

cmd_env() {
  cat <<EOF
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REGION=us-east-1
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$PORT
EOF
}

cmd_purge_bucket() {
  [ -n "${1:-}" ] || die "usage: rgw.sh purge-bucket NAME"
  radosgw_admin bucket rm --bucket="$1" --purge-objects --bypass-gc >/dev/null
}

cmd_clean() {
  cmd_stop
  rm -rf "$DIR"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) trap - ERR; cmd_status ;;
  env) cmd_env ;;
  clean) cmd_clean ;;
  purge-bucket) cmd_purge_bucket "${2:-}" ;;
  *) echo "usage: $0 install|start|stop|status|env|clean|purge-bucket NAME" >&2; exit 2 ;;
esac
