#!/usr/bin/env bash
# fuzz.sh — run every fuzz target in the module for $FUZZTIME each; `make
# fuzz` runs this. The targets are found, not listed, so a new one cannot be
# left out: every `func FuzzXxx(` that starts a line of a _test.go file.
# internal/repotest checks that this finds what the Go parser finds.
#
#   scripts/fuzz.sh          run them all, report each, fail if any failed
#   scripts/fuzz.sh -l       list them, one "DIR NAME" a line
#
# Environment: GO (default go), FUZZTIME (default 20s), FUZZFLAGS (more
# go test flags, e.g. -parallel 1 on a shared machine).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-20s}

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

mapfile -t all < <(targets)
[ ${#all[@]} -gt 0 ] || { echo "fuzz.sh: no fuzz targets found" >&2; exit 1; }
failed=() summary=()
for t in "${all[@]}"; do
    dir=${t% *} name=${t#* }
    echo "=== $name in ./$dir for $FUZZTIME"
    start=$SECONDS
    # shellcheck disable=SC2086 # FUZZFLAGS is a list of flags
    if "$GO" test "./$dir" -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" ${FUZZFLAGS:-} </dev/null; then
        result=ok
    else
        result=FAILED
        failed+=("$name ($dir)")
    fi
    summary+=("$(printf '%-24s %-22s %6s  %s' "$name" "./$dir" "$((SECONDS - start))s" "$result")")
done
echo
echo "fuzz.sh: ${#all[@]} targets, $FUZZTIME each (wall time includes building):"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz.sh: failed: ${failed[*]} (the crashing input is under DIR/testdata/fuzz/NAME/)" >&2
    exit 1
fi
