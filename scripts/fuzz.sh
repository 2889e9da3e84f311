#!/usr/bin/env bash
# fuzz.sh — run every fuzz target in the module for $FUZZTIME each; `make
# fuzz` runs this. The targets are found, not listed, so a new one cannot be
# left out: every `func FuzzXxx(` that starts a line of a _test.go file.
# internal/repotest checks that this finds what the Go parser finds.
#
#   scripts/fuzz.sh          run them all, report each, fail if any failed
#   scripts/fuzz.sh REGEXP   run those whose "DIR NAME" line matches
#   scripts/fuzz.sh -l       list them, one "DIR NAME" a line
#
# Environment: GO (default go), FUZZTIME (default 20s), FUZZMINIMIZETIME
# (default 2s), FUZZFLAGS (more go test flags, e.g. -parallel 1 on a shared
# machine).
#
# FUZZMINIMIZETIME bounds the minimization of each input that finds new
# coverage. Go's default, 60s, is more than a whole run here: with it,
# targets whose inputs cost milliseconds (files written, images opened)
# spent most of a 30 s run minimizing their first new input, and some ran
# 5 to 13 inputs in all.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-20s}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-2s}

targets() {
    grep -rHoE --include='*_test.go' --exclude-dir=.git --exclude-dir=testdata \
        '^func Fuzz[A-Za-z0-9_]*\(' . |
    while IFS=: read -r file match; do
        dir=$(dirname "${file#./}")
        name=${match#func }
        echo "$dir ${name%(}"
    done | sort -u
}

if [ "${1:-}" = -l ]; then
    targets
    exit 0
fi

mapfile -t all < <(targets | grep -E -- "${1:-.}")
[ ${#all[@]} -gt 0 ] || { echo "fuzz.sh: no fuzz targets found${1:+ matching $1}" >&2; exit 1; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# fuzz DIR NAME: one run; its output goes to the terminal and to $log.
fuzz() {
    # shellcheck disable=SC2086 # FUZZFLAGS is a list of flags
    "$GO" test "./$1" -run '^$' -fuzz "^$2\$" -fuzztime "$FUZZTIME" \
        -fuzzminimizetime "$FUZZMINIMIZETIME" ${FUZZFLAGS:-} </dev/null 2>&1 | tee "$log"
    return "${PIPESTATUS[0]}"
}
# A run can fail with a bare "context deadline exceeded" as FUZZTIME ends,
# having found nothing: a race in Go's fuzzing coordinator (golang/go#75804,
# fixed in Go 1.27). A finding always writes its input first.
deadlineRace() {
    grep -q '^    context deadline exceeded$' "$log" && ! grep -q 'Failing input written' "$log"
}
failed=() summary=()
for t in "${all[@]}"; do
    dir=${t% *} name=${t#* }
    echo "=== $name in ./$dir for $FUZZTIME"
    start=$SECONDS
    result=ok
    if ! fuzz "$dir" "$name"; then
        result=FAILED
        if deadlineRace; then
            echo "=== $name: no input written, only Go's deadline race (golang/go#75804); once more"
            result="ok (run twice: deadline race)"
            fuzz "$dir" "$name" || { deadlineRace && result="ok (deadline race twice, no input written)" || result=FAILED; }
        fi
    fi
    [ "$result" = FAILED ] && failed+=("$name ($dir)")
    execs=$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2) || execs=
    summary+=("$(printf '%-22s %-20s %5s %9s execs  %s' "$name" "./$dir" "$((SECONDS - start))s" "${execs:-?}" "$result")")
done
echo
echo "fuzz.sh: ${#all[@]} targets, $FUZZTIME each (wall time includes building):"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: failed: ${failed[*]} (the crashing input is under DIR/testdata/fuzz/NAME/)" >&2
    exit 1
fi
