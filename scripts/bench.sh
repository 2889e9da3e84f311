#!/usr/bin/env bash
# bench.sh [IMAGES_DIR] — ocimount vs extraction baselines, measured side by side in one run.
#
# IMAGES_DIR (default /root/lab/oci) holds OCI layouts built by /work/shared/corpus:
# debian-layered, debian-layered-zstd, many-files, big-files (any missing one is skipped).
# Env: BENCH_RUNS (default 3) runs per measurement, the median is reported;
#      BENCH_QUICK=1 one run, skips umoci unpack (pigz|tar tree used instead), archivemount
#        and the zstd tree walks;
#      BENCH_OUT=FILE also writes the markdown report to FILE;
#      OCIMOUNT=path to a built binary (default: build ./cmd/ocimount into the temp dir).
# Needs root (drop_caches, FUSE). Installs archivemount with apt-get if missing (not in quick mode).
# Page caches are dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every "cold" run.
set -euo pipefail

IMAGES=${1:-/root/lab/oci}
RUNS=${BENCH_RUNS:-3}
QUICK=${BENCH_QUICK:-0}
OUT=${BENCH_OUT:-}
[[ $QUICK == 1 ]] && RUNS=1
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[[ $(id -u) == 0 ]] || { echo "bench.sh: run as root (drop_caches, FUSE)" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ocimount-bench.XXXXXX")
MOUNTS=()     # every mountpoint we may have mounted; the trap unmounts them
cleanup() {
    local rc=$? m
    set +e
    for m in "${MOUNTS[@]}"; do
        if mountpoint -q "$m" 2>/dev/null; then
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
        fi
    done
    for m in "${MOUNTS[@]}"; do
        if mountpoint -q "$m" 2>/dev/null; then
            echo "bench.sh: $m still mounted, leaving $WORK" >&2
            exit "$rc"
        fi
    done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
dropcaches() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# Binaries.
OCIMOUNT=${OCIMOUNT:-}
if [[ -z $OCIMOUNT ]]; then
    OCIMOUNT=$WORK/ocimount
    (cd "$ROOT" && go build -tags urfave_cli_no_docs -o "$OCIMOUNT" ./cmd/ocimount)
fi
RANDREAD=$WORK/randread
(cd "$ROOT" && go build -o "$RANDREAD" ./scripts/bench/randread)
KGUNZIP=$WORK/kgunzip   # klauspost/compress gzip to /dev/null: the same-library baseline
(cd "$ROOT" && go build -o "$KGUNZIP" ./scripts/bench/gunzip)
HAVE_SQUASHFUSE=0
command -v mksquashfs >/dev/null && command -v squashfuse >/dev/null && HAVE_SQUASHFUSE=1
for t in umoci pigz zstd tar python3; do
    command -v "$t" >/dev/null || { echo "bench.sh: $t missing" >&2; exit 1; }
done
HAVE_ARCHIVEMOUNT=0
if [[ $QUICK != 1 ]]; then
    if ! command -v archivemount >/dev/null; then
        log "installing archivemount"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q archivemount >/dev/null 2>&1 || true
    fi
    command -v archivemount >/dev/null && HAVE_ARCHIVEMOUNT=1
fi

# ---------------------------------------------------------------- helpers
LAST=0  # seconds taken by the last `timed`
timed() {   # timed CMD... : runs CMD, sets LAST (seconds, wall clock)
    local t0=$EPOCHREALTIME
    "$@"
    LAST=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.3f", b-a}')
}
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END{ if (NR%2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2 }'; }

declare -A R           # R[key]=list of samples
add() { R[$1]="${R[$1]:-} $2"; }
med() { [[ -n $1 && -n ${R[$1]:-} ]] && median ${R[$1]} || echo ""; }

layers() {  # layers LAYOUT -> "mediatype path" per line, in order
    python3 - "$1" <<'EOF'
import json, sys, os
d = sys.argv[1]
def blob(dg): return os.path.join(d, "blobs", *dg.split(":", 1))
idx = json.load(open(os.path.join(d, "index.json")))
m = idx["manifests"][0]
while True:
    j = json.load(open(blob(m["digest"])))
    if "manifests" in j: m = j["manifests"][0]; continue
    break
for l in j["layers"]:
    print(l["mediaType"], blob(l["digest"]))
EOF
}

newdir() { mktemp -d "$WORK/$1.XXXXXX"; }

# mount_img IMAGE CACHE MNT: times the mount (LAST) and sets PID to the server.
PID=""
mount_img() {
    MOUNTS+=("$3")
    timed "$OCIMOUNT" mount -q --cache-dir "$2" "oci:$IMAGES/$1" "$3"
    PID=$(pgrep -f -- "--cache-dir $2 oci:$IMAGES/$1 $3\$" | head -1 || true)
}
hwm_kb() { awk '/^VmHWM/{print $2}' "/proc/$PID/status" 2>/dev/null || echo 0; }
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$PID/status" 2>/dev/null || echo 0; }
umount_img() {  # umount_img MNT: unmount and wait for the server to exit
    "$OCIMOUNT" umount "$1"
    local i
    for i in $(seq 100); do
        [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    PID=""
}

# untar_layers DIR layers-file: decompress every layer in order into DIR (whiteouts are NOT
# applied: .wh.* files are extracted as ordinary files; tar's complaints are ignored).
untar_layers() {
    local dir=$1 mt path
    while read -r mt path; do
        case $mt in
            *zstd*) zstd -dc -q "$path" | tar -xf - -C "$dir" 2>/dev/null || true ;;
            *gzip*) pigz -dc "$path" | tar -xf - -C "$dir" 2>/dev/null || true ;;
            *)      tar -xf "$path" -C "$dir" 2>/dev/null || true ;;
        esac
    done < "$2"
}

find_count() { find "$1" | wc -l > /dev/null; }
stat_walk()  { find "$1" -printf '%s %m %u\n' > /dev/null; }
read_all()   { (cd "$1" && find . -type f -print0 | timeout 900 xargs -0 -r cat > /dev/null) || log "read errors (or 900 s timeout) in $1"; }

# walks KEY DIR remount_fn: cold+warm find, stat walk, read-all on DIR. remount_fn is called
# before every cold measurement (after the caches are dropped for ocimount it remounts).
walks() {
    local key=$1 dir=$2 prep=$3
    $prep; timed find_count "$dir"; add "$key.find.cold" "$LAST"
    timed find_count "$dir"; add "$key.find.warm" "$LAST"
    $prep; timed stat_walk "$dir"; add "$key.stat.cold" "$LAST"
    timed stat_walk "$dir"; add "$key.stat.warm" "$LAST"
    # Server memory once every entry has been looked up (and is held by
    # the kernel's dentry cache): what a full walk costs the server.
    [[ $key == *.oci && -n $PID ]] && add "${key%.oci}.rss.walk" "$(rss_kb)"
    [[ ${NOREAD:-0} == 1 ]] && { log "$key: find ${R[$key.find.cold]##* }/${R[$key.find.warm]##* } stat ${R[$key.stat.cold]##* }/${R[$key.stat.warm]##* } s (cold/warm)"; return 0; }
    $prep; timed read_all "$dir"; add "$key.read.cold" "$LAST"
    timed read_all "$dir"; add "$key.read.warm" "$LAST"
    log "$key: find ${R[$key.find.cold]##* }/${R[$key.find.warm]##* } stat ${R[$key.stat.cold]##* }/${R[$key.stat.warm]##* } read ${R[$key.read.cold]##* }/${R[$key.read.warm]##* } s (cold/warm)"
}

# ---------------------------------------------------------------- per image
ENTRIES=()
bench_tree_image() {   # bench_tree_image NAME
    local img=$1 zstd=0 r cache mnt lf ext
    [[ -d $IMAGES/$img ]] || { log "skip $img (not in $IMAGES)"; return 0; }
    lf=$WORK/$img.layers; layers "$IMAGES/$img" > "$lf"
    grep -q zstd "$lf" && zstd=1
    log "$img: $(wc -l < "$lf") layers, $RUNS run(s)"

    # ocimount cold: empty cache dir.
    for r in $(seq "$RUNS"); do
        rm -rf "$WORK/cache-$img"; cache=$WORK/cache-$img; mkdir -p "$cache"
        mnt=$(newdir mnt)
        dropcaches
        mount_img "$img" "$cache" "$mnt"; add "$img.ready.cold" "$LAST"
        add "$img.rss.cold" "$(hwm_kb)"
        [[ $r == 1 ]] && ENTRIES+=("$img=$(grep -o 'entries=[0-9]*' "$cache/ocimount.log" | tail -1 | cut -d= -f2)")
        umount_img "$mnt"
        log "$img: ocimount cold ready ${LAST}s"
    done
    # ocimount warm (index cached), then tree walks on fresh mounts.
    cache=$WORK/cache-$img
    # Walking many-files through the mount takes minutes per run: one run of the walks there.
    local wruns=$RUNS; [[ $img == many-files ]] && wruns=1
    for r in $(seq "$RUNS"); do
        mnt=$(newdir mnt)
        dropcaches
        mount_img "$img" "$cache" "$mnt"; add "$img.ready.warm" "$LAST"
        add "$img.rss.warm" "$(hwm_kb)"
        log "$img: ocimount warm ready ${LAST}s"
        if [[ $zstd == 1 && $QUICK == 1 ]] || (( r > wruns )); then umount_img "$mnt"; continue; fi
        WMNT=$mnt WIMG=$img WCACHE=$cache
        walks "$img.oci" "$mnt" remount_fresh
        add "$img.rss.read" "$(hwm_kb)"
        umount_img "$WMNT"
    done

    # Warm with the page cache kept (a remount right after an unmount):
    # the target's "warm" — index cached; only cold runs drop caches.
    for r in $(seq "$RUNS"); do
        mnt=$(newdir mnt)
        mount_img "$img" "$cache" "$mnt"; umount_img "$mnt"
        mount_img "$img" "$cache" "$mnt"; add "$img.ready.hot" "$LAST"
        umount_img "$mnt"
    done

    # Baselines: pigz|tar (zstd|tar), umoci unpack.
    for r in $(seq "$RUNS"); do
        ext=$WORK/untar-$img; rm -rf "$ext"; mkdir -p "$ext"
        dropcaches
        timed untar_layers "$ext" "$lf"; add "$img.untar" "$LAST"
        log "$img: untar ${LAST}s"
    done
    local tree=$WORK/untar-$img
    if [[ $zstd == 0 && $QUICK != 1 ]]; then
        for r in $(seq "$RUNS"); do
            ext=$WORK/umoci-$img; rm -rf "$ext"
            dropcaches
            if ! timed timeout 900 umoci unpack --image "$IMAGES/$img:latest" "$ext" > /dev/null 2>&1; then
                log "$img: umoci unpack failed"; continue
            fi
            add "$img.umoci" "$LAST"
            log "$img: umoci unpack ${LAST}s"
        done
        [[ -d $WORK/umoci-$img/rootfs ]] && tree=$WORK/umoci-$img/rootfs
    fi
    if [[ $zstd == 0 || $QUICK != 1 ]]; then
        for r in $(seq "$wruns"); do walks "$img.ext" "$tree" dropcaches; done
    fi
    # squashfuse over the same tree (find and stat walks only).
    if [[ $HAVE_SQUASHFUSE == 1 && $zstd == 0 ]]; then
        local sq=$WORK/$img.sqfs
        mksquashfs "$tree" "$sq" -noappend -quiet -no-progress >/dev/null 2>&1
        SQ=$sq SQMNT=$(newdir sqmnt)
        squashfuse "$SQ" "$SQMNT"
        for r in $(seq "$wruns"); do NOREAD=1 walks "$img.sq" "$SQMNT" remount_sq; done
        umount "$SQMNT" 2>/dev/null || umount -l "$SQMNT"
        rm -f "$sq"
    fi
    rm -rf "$WORK/untar-$img" "$WORK/umoci-$img"
    [[ $zstd == 1 ]] || rm -rf "$WORK/cache-$img"
}
remount_sq() { umount "$SQMNT" 2>/dev/null || umount -l "$SQMNT"; dropcaches; squashfuse "$SQ" "$SQMNT"; }
remount_fresh() {  # for walks on the mount: unmount, drop caches, mount again (warm index)
    umount_img "$WMNT"
    dropcaches
    mount_img "$WIMG" "$WCACHE" "$WMNT"
}

bench_big_files() {
    local img=big-files lf cache mnt layer ext r line f=data/mixed.bin
    [[ -d $IMAGES/$img ]] || { log "skip $img"; return 0; }
    lf=$WORK/$img.layers; layers "$IMAGES/$img" > "$lf"
    layer=$(head -1 "$lf" | cut -d' ' -f2)     # layer 1 holds data/mixed.bin (06-big-files.sh)
    cache=$WORK/cache-$img; mkdir -p "$cache"
    mnt=$(newdir mnt)
    for r in $(seq "$RUNS"); do
        rm -rf "$cache"; mkdir -p "$cache"; dropcaches
        mount_img "$img" "$cache" "$mnt"; add "$img.ready.cold" "$LAST"; add "$img.rss.cold" "$(hwm_kb)"
        [[ $r == 1 ]] && ENTRIES+=("$img=$(grep -o 'entries=[0-9]*' "$cache/ocimount.log" | tail -1 | cut -d= -f2)")
        umount_img "$mnt"
        log "$img: cold ready ${LAST}s"
    done
    ext=$WORK/untar-$img; mkdir -p "$ext"; untar_layers "$ext" "$lf"
    local size; size=$(stat -c %s "$ext/$f")
    for r in $(seq "$RUNS"); do
        dropcaches; mount_img "$img" "$cache" "$mnt"; add "$img.ready.warm" "$LAST"; add "$img.rss.warm" "$(hwm_kb)"
        timed dd if="$mnt/$f" of=/dev/null bs=1M status=none; add "$img.seq.oci.cold" "$(mbps "$size" "$LAST")"
        timed dd if="$mnt/$f" of=/dev/null bs=1M status=none; add "$img.seq.oci.warm" "$(mbps "$size" "$LAST")"
        add "$img.rss.read" "$(hwm_kb)"
        umount_img "$mnt"
        dropcaches
        timed dd if="$ext/$f" of=/dev/null bs=1M status=none; add "$img.seq.ext.cold" "$(mbps "$size" "$LAST")"
        dropcaches
        local bytes; bytes=$WORK/pigz.bytes
        timed sh -c "pigz -dc '$layer' | wc -c > '$bytes'"; add "$img.seq.pigz" "$(mbps "$(cat "$bytes")" "$LAST")"
        dropcaches
        timed sh -c "'$KGUNZIP' '$layer' > '$bytes'"; add "$img.seq.kgz" "$(mbps "$(cat "$bytes")" "$LAST")"
        # random 4 KiB preads, fresh mount (empty span cache), caches dropped
        dropcaches; mount_img "$img" "$cache" "$mnt"
        line=$("$RANDREAD" -n 2000 -seed 1 "$mnt/$f"); randadd "$img.rand.oci" "$line"
        line=$("$RANDREAD" -n 2000 -seed 1 "$mnt/$f"); randadd "$img.rand.ociwarm" "$line"
        umount_img "$mnt"
        dropcaches
        line=$("$RANDREAD" -n 2000 -seed 1 "$ext/$f"); randadd "$img.rand.ext" "$line"
        log "$img: run $r: seq MiB/s oci ${R[$img.seq.oci.cold]##* } local ${R[$img.seq.ext.cold]##* } pigz ${R[$img.seq.pigz]##* }; rand p50 oci ${R[$img.rand.oci.p50]##* } local ${R[$img.rand.ext.p50]##* } us"
    done
    if [[ $HAVE_ARCHIVEMOUNT == 1 ]]; then
        local am; am=$(newdir am); MOUNTS+=("$am")
        dropcaches
        timed timeout 600 archivemount -o ro,readonly "$layer" "$am"; add "$img.ready.am" "$LAST"
        log "archivemount ready ${LAST}s"
        if line=$(timeout 300 "$RANDREAD" -n 200 -seed 1 -timeout 60s "$am/$f"); then
            randadd "$img.rand.am" "$line"; AM_LINE=$line
        fi
        umount "$am" || umount -l "$am"
    fi
    rm -rf "$ext"
}
# bench_big_uncompressed: sequential read of the same file from a plain tar layer.
bench_big_uncompressed() {
    local img=big-files-uncompressed lf cache mnt ext r f=data/mixed.bin size
    [[ -d $IMAGES/$img ]] || { log "skip $img"; return 0; }
    lf=$WORK/$img.layers; layers "$IMAGES/$img" > "$lf"
    cache=$WORK/cache-$img; mkdir -p "$cache"; mnt=$(newdir mnt)
    ext=$WORK/untar-$img; mkdir -p "$ext"; untar_layers "$ext" "$lf"
    size=$(stat -c %s "$ext/$f")
    mount_img "$img" "$cache" "$mnt"; umount_img "$mnt"   # index it once
    for r in $(seq "$RUNS"); do
        dropcaches; mount_img "$img" "$cache" "$mnt"
        timed dd if="$mnt/$f" of=/dev/null bs=1M status=none; add "$img.seq.oci.cold" "$(mbps "$size" "$LAST")"
        umount_img "$mnt"; mount_img "$img" "$cache" "$mnt"
        timed dd if="$mnt/$f" of=/dev/null bs=1M status=none; add "$img.seq.oci.hot" "$(mbps "$size" "$LAST")"
        umount_img "$mnt"
        dropcaches
        timed dd if="$ext/$f" of=/dev/null bs=1M status=none; add "$img.seq.ext.cold" "$(mbps "$size" "$LAST")"
        timed dd if="$ext/$f" of=/dev/null bs=1M status=none; add "$img.seq.ext.hot" "$(mbps "$size" "$LAST")"
        log "$img: run $r: seq MiB/s oci ${R[$img.seq.oci.cold]##* }/${R[$img.seq.oci.hot]##* } local ${R[$img.seq.ext.cold]##* }/${R[$img.seq.ext.hot]##* } (cold/page cache of the layer or file)"
    done
    rm -rf "$ext"
}

# bench_baseline_rss: the server's RSS on a tiny image, after listing it:
# the process baseline that per-entry figures are measured above.
bench_baseline_rss() {
    local d mnt
    d=$(newdir tiny); (cd "$ROOT" && go run ./scripts/mkdemo "$d/image") >/dev/null 2>&1 || return 0
    mnt=$(newdir mnt); MOUNTS+=("$mnt")
    timed "$OCIMOUNT" mount -q --cache-dir "$d/cache" "oci:$d/image" "$mnt"
    PID=$(pgrep -f -- "--cache-dir $d/cache oci:$d/image $mnt\$" | head -1 || true)
    find "$mnt" -printf '%s %m %u\n' > /dev/null
    BASE_RSS=$(rss_kb)
    umount_img "$mnt"
    log "baseline server RSS (tiny image): ${BASE_RSS} KiB"
}
BASE_RSS=0

AM_LINE=""
mbps() { awk -v b="$1" -v s="$2" 'BEGIN{printf "%.0f", b/1048576/s}'; }
randadd() {  # randadd KEY "reads=.. p50_us=.. p99_us=.."
    local k=$1 line=$2
    add "$k.p50" "$(sed -n 's/.*p50_us=\([0-9.]*\).*/\1/p' <<<"$line")"
    add "$k.p99" "$(sed -n 's/.*p99_us=\([0-9.]*\).*/\1/p' <<<"$line")"
    add "$k.n" "$(sed -n 's/.*reads=\([0-9]*\).*/\1/p' <<<"$line")"
}

# ---------------------------------------------------------------- run
T0=$EPOCHREALTIME
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
bench_baseline_rss
bench_tree_image debian-layered
bench_tree_image debian-layered-zstd
bench_tree_image many-files
bench_big_files
bench_big_uncompressed
ELAPSED=$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.0f", b-a}')
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
entries() { local e; for e in "${ENTRIES[@]}"; do [[ ${e%%=*} == "$1" ]] && echo "${e#*=}"; done; return 0; }
fmt() { awk -v v="$1" 'BEGIN{ if (v=="") print "–"; else if (v+0>=100) printf "%.0f", v; else if (v+0>=10) printf "%.1f", v; else printf "%.3g", v }'; }
row() {  # row IMAGE WHAT UNIT OCI_KEY BASELINE_NAME BASE_KEY
    local o b ratio
    o=$(med "$4"); b=$(med "$6")
    [[ -z $o ]] && return 0
    ratio=$(awk -v o="$o" -v b="$b" 'BEGIN{ if (b=="" || b+0==0) print "–"; else printf "%.2f×", o/b }')
    echo "| $1 | $2 | $(fmt "$o") $3 | ${5:-–} | $( [[ -n $b ]] && echo "$(fmt "$b") $3" || echo –) | $ratio |"
}
report() {
    local disk cpu
    disk=$(findmnt -no SOURCE --target "$WORK" 2>/dev/null || echo ?)
    local dev=${disk#/dev/}; dev=${dev%%[0-9]*}
    cpu=$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)
    echo "## ocimount benchmark ($(date -u +%F), $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo ?))"
    echo
    echo "Machine: $(nproc) CPUs ($cpu), $(free -g | awk '/^Mem/{print $2}') GiB RAM, kernel $(uname -r)," \
         "disk $disk ($(lsblk -dno ROTA,SIZE "/dev/$dev" 2>/dev/null | awk '{print ($1==1?"rotational":"non-rotational") ", " $2}' || echo ?))," \
         "temp dir on $(df -T "$WORK" | awk 'NR==2{print $2}')."
    echo "Runs: $RUNS per cell (median)$( [[ $QUICK == 1 ]] && echo ', BENCH_QUICK=1: no umoci, no archivemount, no zstd walks')." \
         "Walks on many-files: 1 run. Page caches dropped before every cold run. Total bench time ${ELAPSED}s." \
         "Load average (1/5/15 min) at start: $LOAD0, at end: $LOAD1 (anything above ~0.5 means other work competed)."
    echo
    echo "Ratio = ocimount ÷ baseline: for seconds and µs < 1 means ocimount is faster; for MiB/s > 1 means faster."
    echo "*untar* = \`pigz -dc\` (or \`zstd -dc\`) of each layer piped to \`tar -x\` into one empty dir, in layer order," \
         "whiteouts **not** applied, no fsync. *umoci* = \`umoci unpack\` (applies whiteouts, writes an mtree manifest)." \
         "Walks on the mount use a fresh mount (warm index) per cold run; the extracted tree is umoci's rootfs" \
         "(untar tree for zstd and in quick mode). read = \`find -type f -print0 | xargs -0 cat >/dev/null\`."
    echo
    echo "| image | measurement | ocimount | baseline | baseline value | ratio |"
    echo "|---|---|---|---|---|---|"
    local img
    for img in debian-layered debian-layered-zstd many-files; do
        [[ -n $(med "$img.ready.cold") ]] || continue
        row "$img" "ready, cold (empty cache)" s "$img.ready.cold" "umoci unpack" "$img.umoci"
        row "$img" "ready, cold (empty cache)" s "$img.ready.cold" "$( [[ $img == *zstd* ]] && echo 'zstd -dc \| tar -x' || echo 'pigz -dc \| tar -x')" "$img.untar"
        row "$img" "ready, warm (index cached, caches dropped)" s "$img.ready.warm" "$( [[ $img == *zstd* ]] && echo 'zstd -dc \| tar -x' || echo 'pigz -dc \| tar -x')" "$img.untar"
        row "$img" "ready, warm (index cached, page cache kept)" s "$img.ready.hot" "$( [[ $img == *zstd* ]] && echo 'zstd -dc \| tar -x' || echo 'pigz -dc \| tar -x')" "$img.untar"
        local w
        for w in find stat read; do
            local wn; case $w in find) wn='`find \| wc -l`';; stat) wn='stat walk';; read) wn='read every file';; esac
            row "$img" "$wn, cold" s "$img.oci.$w.cold" "extracted tree" "$img.ext.$w.cold"
            row "$img" "$wn, warm" s "$img.oci.$w.warm" "extracted tree" "$img.ext.$w.warm"
            if [[ $w != read ]]; then
                row "$img" "$wn, cold" s "$img.oci.$w.cold" "squashfuse" "$img.sq.$w.cold"
                row "$img" "$wn, warm" s "$img.oci.$w.warm" "squashfuse" "$img.sq.$w.warm"
            fi
        done
    done
    img=big-files
    if [[ -n $(med "$img.ready.warm") ]]; then
        row "$img" "ready, cold (empty cache)" s "$img.ready.cold" "" ""
        row "$img" "ready, warm" s "$img.ready.warm" "archivemount ready" "$img.ready.am"
        row "$img" "seq read mixed.bin, cold" MiB/s "$img.seq.oci.cold" "local file, cold" "$img.seq.ext.cold"
        row "$img" "seq read mixed.bin, cold" MiB/s "$img.seq.oci.cold" "\`pigz -dc\` layer" "$img.seq.pigz"
        row "$img" "seq read mixed.bin, cold" MiB/s "$img.seq.oci.cold" "klauspost gzip -d of the layer" "$img.seq.kgz"
        row "$img" "seq read mixed.bin, warm (page cache)" MiB/s "$img.seq.oci.warm" "" ""
        row "$img" "4 KiB random pread p50, cold" µs "$img.rand.oci.p50" "local file" "$img.rand.ext.p50"
        row "$img" "4 KiB random pread p99, cold" µs "$img.rand.oci.p99" "local file" "$img.rand.ext.p99"
        row "$img" "4 KiB random pread p50, same offsets again" µs "$img.rand.ociwarm.p50" "" ""
        row "$img" "4 KiB random pread p99, same offsets again" µs "$img.rand.ociwarm.p99" "" ""
        if [[ -n $AM_LINE ]]; then
            row "$img" "4 KiB random pread p50, cold" µs "$img.rand.oci.p50" "archivemount ($(med $img.rand.am.n) reads)" "$img.rand.am.p50"
            row "$img" "4 KiB random pread p99, cold" µs "$img.rand.oci.p99" "archivemount ($(med $img.rand.am.n) reads)" "$img.rand.am.p99"
        fi
    fi
    img=big-files-uncompressed
    if [[ -n $(med "$img.seq.oci.cold") ]]; then
        row "$img" "seq read mixed.bin, cold" MiB/s "$img.seq.oci.cold" "local file, cold" "$img.seq.ext.cold"
        row "$img" "seq read mixed.bin, layer in page cache" MiB/s "$img.seq.oci.hot" "local file in page cache" "$img.seq.ext.hot"
    fi
    echo
    echo "Server RSS after a full stat walk (VmRSS; every entry looked up), above the RSS of a server"
    echo "on a tiny image after the same walk ($(awk -v k="$BASE_RSS" 'BEGIN{printf "%.1f MiB", k/1024}')):"
    echo
    echo "| image | entries | RSS after walk | bytes/entry above baseline |"
    echo "|---|---|---|---|"
    for img in debian-layered debian-layered-zstd many-files; do
        [[ -n $(med "$img.rss.walk") ]] || continue
        local n k
        n=$(entries "$img"); k=$(med "$img.rss.walk")
        echo "| $img | ${n:-?} | $(awk -v k="$k" 'BEGIN{printf "%.1f MiB", k/1024}') | $(awk -v k="$k" -v b="$BASE_RSS" -v n="${n:-0}" 'BEGIN{ if (n>0) printf "%.0f", (k-b)*1024/n; else print "?" }') |"
    done
    echo
    echo "Peak RSS of the ocimount server (VmHWM):"
    echo
    echo "| image | entries | after cold mount (indexing) | after warm mount | after reads | KiB/entry (warm mount) |"
    echo "|---|---|---|---|---|---|"
    for img in debian-layered debian-layered-zstd many-files big-files; do
        [[ -n $(med "$img.rss.cold") ]] || continue
        local n c w rd
        n=$(entries "$img"); c=$(med "$img.rss.cold"); w=$(med "$img.rss.warm"); rd=$(med "$img.rss.read")
        echo "| $img | ${n:-?} | $(awk -v k="$c" 'BEGIN{printf "%.1f MiB", k/1024}') |" \
             "$(awk -v k="$w" 'BEGIN{printf "%.1f MiB", k/1024}') | $( [[ -n $rd ]] && awk -v k="$rd" 'BEGIN{printf "%.1f MiB", k/1024}' || echo –) |" \
             "$(awk -v k="$w" -v n="${n:-0}" 'BEGIN{ if (n>0) printf "%.2f", k/n; else print "?" }') |"
    done
}
report | tee "${OUT:-/dev/null}"
