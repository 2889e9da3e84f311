#!/usr/bin/env bash
# bench-bundle.sh [SOURCE [ARGS...]] — time from command to the container's first output line:
#   ocimount bundle + runc run, index not cached (fresh cache dir)
#   ocimount bundle + runc run, index cached
#   umoci unpack + runc run (the baseline), all in the same run.
#
# SOURCE is any ocimount source (default oci:/root/lab/oci/debian-layered:latest, a ~600 MiB
# six-layer Debian image whose Entrypoint is `python3 -u`). ARGS replace the image's Cmd and
# must make the container print "first-line" first (default: -c "print('first-line')", for
# that image; for a shell entrypoint-less image: /bin/sh -c 'echo first-line'). The baseline
# runs the same process.args in umoci's bundle.
# Env: BENCH_RUNS (default 3) runs per case, the median is reported; BENCH_WARM=1 keeps the
# page cache (default: sync + drop_caches before every run); OCIMOUNT=path to a built binary.
# Needs root, runc, umoci, python3.
set -euo pipefail

SRC=${1:-oci:/root/lab/oci/debian-layered:latest}
shift || true
CMD=("$@")
[[ ${#CMD[@]} -gt 0 ]] || CMD=(-c "print('first-line')")
RUNS=${BENCH_RUNS:-3}
WARM=${BENCH_WARM:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[[ $(id -u) == 0 ]] || { echo "bench-bundle.sh: run as root" >&2; exit 1; }
for t in runc umoci python3; do
    command -v "$t" >/dev/null || { echo "bench-bundle.sh: $t missing" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ocimount-bench-bundle.XXXXXX")
OCIMOUNT=${OCIMOUNT:-}
cleanup() {
    local rc=$? d
    set +e
    for d in "$WORK"/b-*; do
        [[ -e $d/.ocimount-bundle.json ]] && "$OCIMOUNT" bundle --remove --lazy "$d"
    done
    runc list -q 2>/dev/null | grep "^ocimount-bench-$$-" | xargs -r -n1 runc delete -f
    if grep -q " ${WORK}/" /proc/self/mountinfo; then
        echo "bench-bundle.sh: mounts left under $WORK, not removing it" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [[ -z $OCIMOUNT ]]; then
    OCIMOUNT=$WORK/ocimount
    (cd "$ROOT" && go build -tags urfave_cli_no_docs -o "$OCIMOUNT" ./cmd/ocimount)
fi

log() { printf '[bench-bundle %s] %s\n' "$(date +%T)" "$*" >&2; }
dropcaches() { [[ $WARM == 1 ]] || { sync; echo 3 > /proc/sys/vm/drop_caches; }; }
now() { date +%s.%N; }
n=0
nextid() { n=$((n + 1)); echo "ocimount-bench-$$-$n"; }

# first_line CMD...: runs CMD, prints the seconds from start until its first stdout line
# ("first-line" is checked), lets it finish.
first_line() {
    local t0 t1 line
    t0=$(now)
    { "$@"; } | {
        IFS= read -r line || true
        t1=$(now)
        cat >/dev/null
        [[ $line == first-line ]] || { echo "bench-bundle.sh: first line was '$line'" >&2; exit 1; }
        python3 -c "print(f'{$t1 - $t0:.3f}')"
    }
}

# The OCI layout and ref umoci needs, from SOURCE.
case $SRC in
    oci:*) rest=${SRC#oci:}; LAYOUT=${rest%%:*}; REF=${rest#"$LAYOUT"}; REF=${REF#:}; REF=${REF:-latest} ;;
    *) LAYOUT=$SRC; REF=latest ;;
esac

ocimount_case() { # $1 = cache dir; prints seconds
    local d id
    id=$(nextid)
    d=$WORK/b-$id
    first_line bash -c '"$1" bundle -q --cache-dir "$2" "$3" "$4" -- "${@:6}" && exec runc run -b "$4" "$5" </dev/null' \
        _ "$OCIMOUNT" "$1" "$SRC" "$d" "$id" "${CMD[@]}"
    runc delete -f "$id" >/dev/null 2>&1 || true
    "$OCIMOUNT" bundle --remove "$d"
}

# Reference args: what ocimount writes, so the baseline runs the same process.
probe=$WORK/probe
"$OCIMOUNT" bundle -q --cache-dir "$WORK/cache-probe" "$SRC" "$probe" -- "${CMD[@]}"
ARGS_JSON=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["process"]["args"]))' "$probe/config.json")
"$OCIMOUNT" bundle --remove "$probe"
rm -rf "$WORK/cache-probe"
log "source $SRC, process.args $ARGS_JSON, $RUNS run(s) per case, page cache $([[ $WARM == 1 ]] && echo kept || echo dropped)"

umoci_case() {
    local id d
    id=$(nextid)
    d=$WORK/u-$id
    first_line bash -c 'umoci unpack --image "$1:$2" "$3" >/dev/null &&
        python3 -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); c[\"process\"][\"args\"]=json.loads(sys.argv[2]); c[\"process\"][\"terminal\"]=False; json.dump(c, open(p, \"w\"))" "$3/config.json" "$4" &&
        exec runc run -b "$3" "$5" </dev/null' _ "$LAYOUT" "$REF" "$d" "$ARGS_JSON" "$id"
    runc delete -f "$id" >/dev/null 2>&1 || true
    rm -rf "$d"
}


cold=() warm=() base=()
WARMCACHE=$WORK/cache-warm
dropcaches
"$OCIMOUNT" index -q --cache-dir "$WARMCACHE" "$SRC" >/dev/null 2>&1 || "$OCIMOUNT" index --cache-dir "$WARMCACHE" "$SRC" >/dev/null
for ((i = 0; i < RUNS; i++)); do
    rm -rf "$WORK/cache-cold"
    dropcaches; cold+=("$(ocimount_case "$WORK/cache-cold")")
    dropcaches; warm+=("$(ocimount_case "$WARMCACHE")")
    dropcaches; base+=("$(umoci_case)")
    log "run $((i + 1)): not cached ${cold[-1]} s, cached ${warm[-1]} s, umoci unpack + runc ${base[-1]} s"
done
# Ratios are taken per run (each run's three cases ran back to back, under the same load
# from whatever else the machine was doing), then the median of those is reported.
python3 - "$SRC" "${#cold[@]}" "${cold[@]}" "${warm[@]}" "${base[@]}" <<'EOF2'
import sys, statistics as st
src, n = sys.argv[1], int(sys.argv[2])
v = list(map(float, sys.argv[3:]))
cold, warm, base = v[:n], v[n:2*n], v[2*n:]
med = lambda xs: st.median(xs)
rc = med([c / b for c, b in zip(cold, base)])
rw = med([w / b for w, b in zip(warm, base)])
print(f"| {src}, {n} run(s) | seconds to first output line, median (min-max) | ratio to umoci unpack + runc run, median of per-run ratios |")
print("|---|---|---|")
rng = lambda xs: f"{med(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"
print(f"| ocimount bundle + runc run, index not cached | {rng(cold)} | {rc:.2f}x |")
print(f"| ocimount bundle + runc run, index cached | {rng(warm)} | {rw:.2f}x |")
print(f"| umoci unpack + runc run | {rng(base)} | 1x |")
EOF2
