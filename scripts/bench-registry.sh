#!/usr/bin/env bash
# bench-registry.sh [OCI_LAYOUT] — what a registry mount costs until first use,
# next to pulling and extracting the same image, measured in one run.
#
# OCI_LAYOUT (default /root/lab/oci/debian-layered) is pushed to a fresh
# docker-registry on loopback. A counting proxy (scripts/bench/countproxy)
# sits between the clients and the registry and counts response body bytes.
# Measured, each with an empty cache:
#   (a) cold:      no index anywhere; `ocimount mount`, `ls /MNT`, `cat /MNT/etc/os-release`
#   (b) published: after `ocimount index --push` (straight to the registry, not
#                  counted), the same steps
#   (c) baseline:  `skopeo copy docker://… oci:DIR` + `umoci unpack`
# Page caches are dropped before each (BENCH_DROP_CACHES=0 to skip).
# Env: OCIMOUNT=path to a built binary (default: build ./cmd/ocimount);
#      BENCH_FILE=path inside the image to cat (default etc/os-release);
#      BENCH_PUBLISHED_FLAGS=extra mount flags for (b): "--no-toc" for an
#      eStargz/zstd:chunked image (scripts/bench/tocimage), whose (a) then
#      mounts from the TOCs and (b) from the published indexes;
#      BENCH_BASELINE=0 skips (c) (umoci 0.4 cannot unpack zstd layers).
# Needs root (FUSE, drop_caches), docker-registry, skopeo, umoci, curl, jq, go.
set -euo pipefail

IMG=$(realpath "${1:-/root/lab/oci/debian-layered}")
FILE=${BENCH_FILE:-etc/os-release}
DROP=${BENCH_DROP_CACHES:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[[ $(id -u) == 0 ]] || { echo "bench-registry.sh: run as root (FUSE, drop_caches)" >&2; exit 1; }
[[ -f $IMG/index.json ]] || { echo "bench-registry.sh: $IMG is not an OCI layout" >&2; exit 1; }
for t in docker-registry skopeo umoci curl jq go; do
    command -v "$t" >/dev/null || { echo "bench-registry.sh: $t not found" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ocimount-benchreg.XXXXXX")
PIDS=()
MOUNTS=()
cleanup() {
    local rc=$? m p
    set +e
    for m in "${MOUNTS[@]}"; do
        mountpoint -q "$m" 2>/dev/null && { umount "$m" 2>/dev/null || umount -l "$m"; }
    done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT INT TERM

now() { date +%s.%N; }
drop() { if [[ $DROP == 1 ]]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi; }
freeport() {
    local p
    for _ in $(seq 1 50); do
        p=$(shuf -i 20000-60999 -n 1)
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
    echo "bench-registry.sh: no free port" >&2; exit 1
}

# --- build ----------------------------------------------------------------------
OCIM=${OCIMOUNT:-}
if [[ -z $OCIM ]]; then
    OCIM=$WORK/ocimount
    (cd "$ROOT" && go build -tags urfave_cli_no_docs -o "$OCIM" ./cmd/ocimount)
fi
(cd "$ROOT" && go build -o "$WORK/countproxy" ./scripts/bench/countproxy)

# --- registry + proxy -----------------------------------------------------------------
RP=$(freeport)
cat >"$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$RP
  secret: bench
EOF
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$RP/v2/" >/dev/null && break; sleep 0.05; done
curl -sf "http://127.0.0.1:$RP/v2/" >/dev/null || { cat "$WORK/registry.log" >&2; exit 1; }

REPO=bench/image:latest
echo "pushing $IMG to 127.0.0.1:$RP/$REPO ..." >&2
skopeo --insecure-policy copy --quiet --dest-tls-verify=false "oci:$IMG" "docker://127.0.0.1:$RP/$REPO"

"$WORK/countproxy" -upstream "http://127.0.0.1:$RP" -addr-file "$WORK/proxy.addr" 2>"$WORK/proxy.log" &
PIDS+=($!)
for _ in $(seq 1 100); do [[ -s $WORK/proxy.addr ]] && break; sleep 0.05; done
PP=$(cat "$WORK/proxy.addr")
stats() { curl -sf "http://$PP/_countproxy/stats"; }
reset() { curl -sf -X POST "http://$PP/_countproxy/reset" >/dev/null; }

# Compressed size = sum of the layer sizes in the pushed manifest.
MAN=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
    "http://127.0.0.1:$RP/v2/bench/image/manifests/latest")
COMP=$(jq '[.layers[].size] | add' <<<"$MAN")
NLAYERS=$(jq '.layers | length' <<<"$MAN")

# mountcase LABEL: mount through the proxy with an empty cache, ls, cat.
# Prints: label mount_s firstuse_s bytes requests range_requests
mountcase() {
    local label=$1 cache=$WORK/cache-$1 mnt=$WORK/mnt-$1 t0 t1 t2 s
    shift
    mkdir -p "$mnt"
    MOUNTS+=("$mnt")
    drop
    reset
    t0=$(now)
    "$OCIM" mount --cache-dir "$cache" "$@" "$PP/$REPO" "$mnt"
    t1=$(now)
    ls "$mnt" >/dev/null
    # (errexit does not reach into the $(mountcase) subshell)
    cat "$mnt/$FILE" >/dev/null || { echo "bench-registry.sh: $label: cat /$FILE failed" >&2; exit 1; }
    t2=$(now)
    s=$(stats)
    # Layer bytes as ocimount counts them (the rest: manifests, config,
    # published index blobs).
    lb=$("$OCIM" status --json "$mnt" | jq '[.layers[].fetched] | add')
    if grep -q "using published layer indexes" "$cache/ocimount.log"; then
        echo "$label: used the published indexes" >&2
    fi
    umount "$mnt"
    echo "$label $(awk "BEGIN{print $t1 - $t0}") $(awk "BEGIN{print $t2 - $t0}") $(jq -r '"\(.bytes) \(.requests) \(.range_requests)"' <<<"$s") $lb"
}

echo "(a) cold mount ..." >&2
A=$(mountcase cold)

echo "(b) index --push (not counted), then mount ..." >&2
"$OCIM" index --push --quiet --cache-dir "$WORK/cache-push" "127.0.0.1:$RP/$REPO"
# shellcheck disable=SC2086 # flags are words
B=$(mountcase published ${BENCH_PUBLISHED_FLAGS:-})

if [[ ${BENCH_BASELINE:-1} == 0 ]]; then
    C="baseline 0 0 0 0 0 0"
else
echo "(c) baseline: skopeo copy + umoci unpack ..." >&2
drop
reset
t0=$(now)
skopeo --insecure-policy copy --quiet --src-tls-verify=false "docker://$PP/$REPO" "oci:$WORK/pulled:latest"
t1=$(now)
umoci unpack --image "$WORK/pulled:latest" "$WORK/bundle" >/dev/null
[[ -f $WORK/bundle/rootfs/$FILE || -L $WORK/bundle/rootfs/$FILE ]]
t2=$(now)
s=$(stats)
C="baseline $(awk "BEGIN{print $t1 - $t0}") $(awk "BEGIN{print $t2 - $t0}") $(jq -r '"\(.bytes) \(.requests) \(.range_requests) \(.blob_bytes)"' <<<"$s")"
fi

# --- report ----------------------------------------------------------------------------
echo
echo "image: $IMG ($NLAYERS layers, $COMP bytes compressed = $(awk "BEGIN{printf \"%.1f\", $COMP/1048576}") MiB)"
echo "registry: docker-registry $(docker-registry --version 2>/dev/null | awk '{print $NF}') on loopback, via countproxy"
echo
awk -v comp="$COMP" -v file="$FILE" '
    { label[NR]=$1; mt[NR]=$2; tt[NR]=$3; by[NR]=$4; rq[NR]=$5; rr[NR]=$6; lb[NR]=$7 }
    END {
        base = tt[3]
        names["cold"]      = "(a) mount, no index (cold)"
        names["published"] = "(b) mount, published index"
        names["baseline"]  = "(c) skopeo copy + umoci unpack"
        printf "| %-32s | %12s | %9s | %12s | %8s | %8s | %12s | %9s |\n", "case", "bytes", "% image", "layer bytes", "requests", "ranged", "time to use", "vs (c)"
        printf "|%s|%s|%s|%s|%s|%s|%s|%s|\n", "----------------------------------", "--------------", "-----------", "--------------", "----------", "----------", "--------------", "-----------"
        for (i = 1; i <= 3; i++)
            if (base > 0) printf "| %-32s | %12d | %8.2f%% | %12d | %8d | %8d | %10.2f s | %8.3fx |\n", names[label[i]], by[i], 100*by[i]/comp, lb[i], rq[i], rr[i], tt[i], tt[i]/base
            else if (i < 3) printf "| %-32s | %12d | %8.2f%% | %12d | %8d | %8d | %10.2f s | %9s |\n", names[label[i]], by[i], 100*by[i]/comp, lb[i], rq[i], rr[i], tt[i], "-"
        printf "\nbytes: response bodies through the proxy (all requests); layer bytes: (a),(b) layer blob bytes\n"
        printf "fetched as ocimount status counts them (the rest is manifests, config, published indexes);\n"
        printf "(c) blob bytes through the proxy. time to use = (a),(b): mount + ls / + cat /%s; (c): copy + unpack.\n", file
        printf "mount alone: (a) %.2f s, (b) %.2f s; (c) skopeo copy alone %.2f s.\n", mt[1], mt[2], mt[3]
    }' <<<"$A
$B
$C"
