#!/usr/bin/env bash
# demo.sh BIN DIR — make the demo image, mount it, show it, unmount it.
set -euo pipefail
bin=$(realpath "$1"); d=$2
rm -rf "$d"; mkdir -p "$d/mnt"
go run ./scripts/mkdemo "$d/image"
echo "== image: $d/image (3 layers: gzip, zstd, tar)"
trap '"$bin" umount "$d/mnt" 2>/dev/null || true' EXIT
t0=$(date +%s.%N)
"$bin" mount --cache-dir "$d/cache" "oci:$d/image:demo" "$d/mnt"
echo "== mounted in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.3f", b-a}') s (first mount: layers indexed now)"
cd "$d/mnt"
echo "== find . (no .wh.* names, etc/secret.txt deleted, app/ replaced, lib/ -> usr/lib)"
find . | sort
echo "== ls -li etc (os-release and its hardlink share an inode, nlink 2)"
ls -li etc
echo "== cat etc/os-release"; cat etc/os-release
echo "== cat app/v3.txt"; cat app/v3.txt
echo "== getfattr -d usr/bin/ping-like"; getfattr -d -m - usr/bin/ping-like 2>/dev/null || echo "(getfattr not installed)"
echo "== tail -n 1 data/numbers.txt (12 MiB gzip'd file; only the last span is inflated)"; tail -n 1 data/numbers.txt
echo "== touch x (read-only)"; touch x 2>&1 || true
cd /
"$bin" umount "$d/mnt"
trap - EXIT
echo "== unmounted"
