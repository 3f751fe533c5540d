#!/usr/bin/env bash
# make soak: `make test` SOAK_RUNS times (default 3) in a fresh clone of this repo's HEAD,
# with one core kept busy by stress-ng, to shake out tests that pass only on an idle
# machine. Prints each run's pytest counts and time; exits 1 if any run failed.
# SOAK_KEEP=1 keeps the clone and the logs (they are kept anyway when a run fails).
set -euo pipefail

runs=${SOAK_RUNS:-3}
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "soak: SOAK_RUNS must be a positive number" >&2; exit 2; }
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)

if ! command -v stress-ng >/dev/null 2>&1; then
    echo "soak: installing stress-ng"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stress-ng) \
        >/dev/null || { echo "soak: cannot install stress-ng (need root and the Debian mirror)" >&2
                        exit 1; }
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/distillsync-soak.XXXXXX")
stress=""
running=""
failed=0

stop_group() {  # a job started under set -m: its process group, children and all
    kill -TERM -- "-$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

finish() {
    [[ -z $running ]] || stop_group "$running"  # interrupted mid-run: that make test too
    [[ -z $stress ]] || stop_group "$stress"
    if [[ $failed -eq 0 && ${SOAK_KEEP:-0} != 1 ]]; then
        rm -rf "$work"
    else
        echo "soak: clone and logs kept in $work"
    fi
}
trap finish EXIT
trap 'echo "soak: interrupted"; exit 130' INT TERM

git clone -q "$repo" "$work/repo"
echo "soak: $runs x make test of $(git -C "$work/repo" log -1 --format='%h %s' | cut -c1-72)"
# The clone's virtualenv first, so that no run's time includes installing it.
make -C "$work/repo" .venv/.installed >"$work/install.log" 2>&1 \
    || { echo "soak: cannot install the clone's virtualenv:"; tail -20 "$work/install.log"
         failed=1; exit 1; }

# One core busy for as long as the soak can last; --timeout ends it even if this script
# is killed before its trap runs. set -m: in a process group of its own (pgid = its pid),
# so the stressor workers are stopped with it and a Ctrl-C reaches only our trap.
set -m
stress-ng --cpu 1 --quiet --timeout "$((runs * 1800 + 900))s" &
stress=$!
set +m
echo "soak: stress-ng --cpu 1 running (pid $stress)"

passed=0
for run in $(seq 1 "$runs"); do
    log="$work/run-$run.log"
    start=$(date +%s)
    # In the background and waited for, so a signal reaches the trap at once (bash runs
    # traps only between foreground commands), in its own group so the trap can stop it.
    set -m
    make -C "$work/repo" test >"$log" 2>&1 &
    running=$!
    set +m
    if wait "$running"; then
        result=PASS; passed=$((passed + 1))
    else
        result=FAIL; failed=1
    fi
    running=""
    seconds=$(($(date +%s) - start))
    # pytest's closing line, e.g. "=== 400 passed, 3 skipped in 512.3s ===".
    counts=$( (grep -E '^=+ .*[0-9]+ (passed|failed|error)' "$log" || true) | tail -1 \
             | tr -d '=' | sed 's/^ *//; s/ *$//')
    printf 'soak: run %d/%d %s in %d s: %s\n' "$run" "$runs" "$result" "$seconds" \
        "${counts:-no pytest summary (see $log)}"
    if [[ $result == FAIL ]]; then
        grep -E '^(FAILED|ERROR) ' "$log" | sed 's/^/soak:     /' || tail -5 "$log"
    fi
done

if [[ $failed -ne 0 ]]; then
    echo "soak: FAILED: $passed of $runs runs passed (logs in $work)"
    exit 1
fi
echo "soak: all $runs runs passed"
