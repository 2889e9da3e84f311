#!/usr/bin/env bash
# bench-explore.sh OCI_LAYOUT[:TAG]... — time from `ocimount explore` to its first full screen (tree of
# the last layer with its marks), cold (empty cache) and warm, against what dive needs before its
# first screen: a full `skopeo copy` of the image to a docker-archive (dive then reads it whole;
# dive itself is not packaged here). TAG defaults to "latest". Medians of RUNS
# (default 3) runs, measured side by side in one run. The screen is read with tmux capture-pane
# every 10 ms, so figures carry up to ~10 ms of polling. Page caches are not dropped.
set -euo pipefail
RUNS=${RUNS:-3}
OCIMOUNT=${OCIMOUNT:-$(cd "$(dirname "$0")/.." && pwd)/ocimount}
[[ -x $OCIMOUNT ]] || { echo "build ocimount first (make) or set OCIMOUNT" >&2; exit 2; }
for t in tmux skopeo python3; do command -v $t >/dev/null || { echo "needs $t" >&2; exit 2; }; done
WORK=$(mktemp -d /tmp/bench-explore.XXXXXX)
SOCK=$WORK/tmux.sock
cleanup() { tmux -S "$SOCK" kill-server 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

now() { date +%s.%N; }

# screens SRC CACHE: seconds until explore shows the image's tree ("first": marks may still be
# coming) and until the screen is full (the last layer's marks and the entry tables are in).
screens() {
    local src=$1 cache=$2 t0 scr first=""
    t0=$(now)
    tmux -S "$SOCK" -f /dev/null new-session -d -s b -x 120 -y 40 "$OCIMOUNT explore --cache-dir $cache $src || sleep 1"
    for _ in $(seq 1 30000); do # ~5 min at most
        if ! tmux -S "$SOCK" has-session -t b 2>/dev/null; then break; fi
        scr=$(tmux -S "$SOCK" capture-pane -p -t b 2>/dev/null || true)
        if grep -q 'TREE after layer [0-9]* (whole image)' <<<"$scr"; then
            [[ -n $first ]] || first=$(python3 -c "print(f'{$(now) - $t0:.3f}')")
            if ! grep -q 'marking\|computing\|entry tables loading' <<<"$scr"; then
                echo "$first $(python3 -c "print(f'{$(now) - $t0:.3f}')")"
                tmux -S "$SOCK" send-keys -t b q
                sleep 0.2
                tmux -S "$SOCK" kill-server 2>/dev/null || true
                return 0
            fi
        fi
        sleep 0.01
    done
    echo "no first screen for $src" >&2
    tmux -S "$SOCK" kill-server 2>/dev/null || true
    return 1
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf '%-14s %11s %10s %11s %10s %9s %10s %10s\n' image cold_first cold_full warm_first warm_full skopeo cold/sk warm/sk
for img in "$@"; do
    tag=latest
    if [[ $img == *:* ]]; then tag=${img##*:}; img=${img%:*}; fi
    name=$(basename "$img")
    src="oci:$img:$tag"
    c1=() c2=() w1=() w2=() sk=()
    for r in $(seq 1 "$RUNS"); do
        c=$WORK/cache-$name-$r
        out=$(screens "$src" "$c"); read -r a b <<<"$out"; c1+=("$a"); c2+=("$b")
        out=$(screens "$src" "$c"); read -r a b <<<"$out"; w1+=("$a"); w2+=("$b")
        rm -f "$WORK/x.tar"
        t0=$(now)
        skopeo --insecure-policy copy --quiet "$src" "docker-archive:$WORK/x.tar:$name:latest"
        sk+=("$(python3 -c "print(f'{$(now) - $t0:.3f}')")")
        rm -rf "$c" "$WORK/x.tar"
    done
    med() { printf '%s\n' "$@" | median; }
    mc1=$(med "${c1[@]}") mc2=$(med "${c2[@]}") mw1=$(med "${w1[@]}") mw2=$(med "${w2[@]}") ms=$(med "${sk[@]}")
    printf '%-14s %11s %10s %11s %10s %9s %10s %10s\n' "$name" "$mc1" "$mc2" "$mw1" "$mw2" "$ms" \
        "$(python3 -c "print(f'{$mc2/$ms:.2f}')")" "$(python3 -c "print(f'{$mw1/$ms:.3f}')")"
done
# cold/sk: cold full screen / skopeo copy; warm/sk: warm first screen / skopeo copy.
