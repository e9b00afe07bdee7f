#!/usr/bin/env bash
# The main job on the embedded default: a local directory repository and a sample
# disk image made here (an ext4 file system holding this project's node_modules,
# or generated data where mkfs.ext4 is missing). Backs it up, changes it in place,
# takes an incremental backup from a change list, restores both points in time and
# checks them byte for byte, then verifies the repository.
#
#   npm run demo            (after npm ci)   work dir: ./demo (PILOTLIGHT_DEMO_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${PILOTLIGHT_DEMO_DIR:-$PWD/demo}"
PL="node $PWD/bin/pilotlight.js"
export PILOTLIGHT_CACHE_DIR="$DIR/cache"
export PILOTLIGHT_PASSWORD="${PILOTLIGHT_PASSWORD:-demo password}"
rm -rf "$DIR" && mkdir -p "$DIR"
IMG="$DIR/sample-disk.img"

echo "== making a sample disk image: $IMG"
if command -v mkfs.ext4 >/dev/null 2>&1; then
  truncate -s 1G "$IMG"
  mkfs.ext4 -q -F -E lazy_itable_init=0,root_owner=0:0 -d node_modules "$IMG"
else
  truncate -s 1G "$IMG"
  head -c 64M /dev/urandom | dd of="$IMG" conv=notrunc bs=1M seek=100 status=none
  find node_modules -type f -name '*.js' -print0 | xargs -0 cat | head -c 200M | dd of="$IMG" conv=notrunc bs=1M seek=300 status=none
fi
echo "   $(du -h --apparent-size "$IMG" | cut -f1) apparent, $(du -h "$IMG" | cut -f1) allocated"

echo "== pilotlight init"
$PL init --repo "$DIR/repo"
echo "== first backup (reads the allocated extents)"
$PL backup file "$IMG" --repo "$DIR/repo" --vm demo-vm
cp --sparse=always "$IMG" "$DIR/state1.img"

echo "== changing 3 MiB of the disk in place, and writing the change list CBT would give"
printf '%s\n' "104857600 1048576" "524288123 2097152" > "$DIR/changes.txt"
head -c 1M /dev/urandom | dd of="$IMG" conv=notrunc bs=1M seek=100 status=none
head -c 2097152 /dev/urandom | dd of="$IMG" conv=notrunc bs=1 seek=524288123 status=none 2>/dev/null || \
  node -e "const fs=require('fs');const fd=fs.openSync('$IMG','r+');fs.writeSync(fd,require('crypto').randomBytes(2097152),0,2097152,524288123)"
echo "== incremental backup from the change list (reads only the changed chunks)"
$PL backup file "$IMG" --repo "$DIR/repo" --vm demo-vm --changed-extents "$DIR/changes.txt"

echo "== snapshots"
$PL snapshots --repo "$DIR/repo" --vm demo-vm
FIRST=$($PL snapshots --repo "$DIR/repo" --vm demo-vm --json | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s)[0].id))")

echo "== restore latest and the first snapshot, compare byte for byte"
$PL restore latest --vm demo-vm --repo "$DIR/repo" --to "$DIR/restored-latest.img"
$PL restore "$FIRST" --repo "$DIR/repo" --to "$DIR/restored-first.img"
cmp "$IMG" "$DIR/restored-latest.img" && echo "   latest: identical"
cmp "$DIR/state1.img" "$DIR/restored-first.img" && echo "   first:  identical"
echo "   restored image allocation: $(du -h "$DIR/restored-latest.img" | cut -f1) (sparse)"

echo "== diff, stats, verify --read-data"
$PL diff "$FIRST" latest --vm demo-vm --repo "$DIR/repo"
$PL stats --repo "$DIR/repo"
$PL verify --read-data --repo "$DIR/repo"
echo "== demo done: everything is under $DIR"
