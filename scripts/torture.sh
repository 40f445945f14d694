#!/usr/bin/env bash
# Fault injection: run the lessons and, at a random moment, send SIGKILL, SIGSTOP or
# SIGTERM to a lesson's parent or to one of its children. Each run must end within
# a bound, with a clear message (no panic backtrace), and leave nothing behind: no
# process of the run, no /dev/shm entry. A stopped parent is continued after a
# moment (someone pressed Ctrl-Z, then fg); a stopped child is left stopped: the
# lesson must notice within its own bounds.
#
#   scripts/torture.sh                 100 runs, a random seed
#   scripts/torture.sh --runs 20 --seed 7 --only pool-map
#
# Like run_all.sh, it touches only processes it started: each run carries a run id
# in its environment (COURSE_RUN_ID), inherited by every child the lesson forks.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/torture.sh [--runs N] [--seed S] [--bound SECS] [--only NAME]...

  --runs N      fault runs in all, spread over the lessons (default 100)
  --seed S      seed for the random moments, targets and signals (default: random)
  --bound SECS  a run that has not ended this long after the fault fails (default 30)
  --only NAME   only this lesson (repeat for several)
  --no-build    use the optimised binaries already built
EOF
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

runs=100
seed=$((($(date +%s%N) / 1000) % 32768))
bound=30
only=()
build=1
while (($#)); do
    case "$1" in
        --runs) [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || { usage >&2; exit 2; }; runs=$2; shift 2 ;;
        --seed) [[ "${2:-}" =~ ^[0-9]+$ ]] || { usage >&2; exit 2; }; seed=$2; shift 2 ;;
        --bound) [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || { usage >&2; exit 2; }; bound=$2; shift 2 ;;
        --only) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; only+=("$2"); shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

# shellcheck source=scripts/course-lib.sh
source scripts/course-lib.sh
select_lessons "${only[@]}"
build_course "$build"
bindir=$(course_bindir)

# How long each lesson runs undisturbed: the faults land inside that time.
declare -A took=()
for name in "${lessons[@]}"; do
    start=$(date +%s%N)
    timeout 120 "$bindir/$name" --ascii >/dev/null 2>&1 </dev/null ||
        { echo "$name fails without any fault; fix that first" >&2; exit 1; }
    took[$name]=$((($(date +%s%N) - start) / 1000000))
done

RANDOM=$seed
echo "torture: $runs runs, seed $seed (repeat with --seed $seed), bound ${bound} s"

work=$(mktemp -d)
pid=""
id=""
cleanup() {
    if [[ -n "$id" ]]; then
        mapfile -t left < <(ours "$id")
        ((${#left[@]})) && kill -KILL "${left[@]}" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

signals=(KILL STOP TERM)
failures=0
hits=0
declare -A tally=()
for ((n = 0; n < runs; n++)); do
    name=${lessons[$((n % ${#lessons[@]}))]}
    sig=${signals[$((RANDOM % 3))]}
    target=$([[ $((RANDOM % 2)) == 0 ]] && echo parent || echo child)
    # Inside the first 80% of an undisturbed run, so that most faults land.
    delay_ms=$(((RANDOM * 32768 + RANDOM) % (${took[$name]} * 4 / 5 + 1)))
    id="torture-$$-$n"
    ls /dev/shm >"$work/shm.before" 2>/dev/null || true

    COURSE_RUN_ID=$id "$bindir/$name" --ascii >"$work/out" 2>"$work/err" </dev/null &
    pid=$!
    sleep "$((delay_ms / 1000)).$(printf '%03d' $((delay_ms % 1000)))"

    # Choose the victim now: the parent, or one of its children (the first to
    # appear if it has none yet).
    victim=$pid
    if [[ $target == child ]]; then
        kids=()
        for ((t = 0; t < ${took[$name]} / 10 + 1; t++)); do
            mapfile -t kids < <(ours "$id" | grep -vx "$pid" || true)
            ((${#kids[@]})) && break
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.01
        done
        if ((${#kids[@]})); then
            victim=${kids[$((RANDOM % ${#kids[@]}))]}
        else
            target="parent (it started no child)"
        fi
    fi
    sent=0
    kill -"$sig" "$victim" 2>/dev/null && sent=1
    if [[ $sig == STOP && $victim == "$pid" ]]; then
        sleep "$(printf '0.%03d' $((RANDOM % 1000)))"
        kill -CONT "$pid" 2>/dev/null || true
    fi

    # The run must end within the bound.
    ended=0
    for ((t = 0; t < bound * 10; t++)); do
        if ! kill -0 "$pid" 2>/dev/null; then ended=1; break; fi
        # A zombie that we have not waited for yet also counts as ended.
        [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && { ended=1; break; }
        sleep 0.1
    done
    problem=""
    if ((!ended)); then
        problem="did not end within ${bound} s"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    set +e
    { wait "$pid"; } 2>/dev/null
    rc=$?
    set -e
    pid=""

    # Orphans get their parent-death signal; give them a moment to go.
    for ((t = 0; t < 20; t++)); do
        [[ -z "$(ours "$id")" ]] && break
        sleep 0.1
    done
    mapfile -t left < <(ours "$id")
    if ((${#left[@]})); then
        problem+="${problem:+; }left processes behind: ${left[*]}"
        kill -CONT "${left[@]}" 2>/dev/null || true
        kill -KILL "${left[@]}" 2>/dev/null || true
    fi
    id=""
    ls /dev/shm >"$work/shm.after" 2>/dev/null || true
    new_shm=$(comm -13 "$work/shm.before" "$work/shm.after" | tr '\n' ' ')
    [[ -n "$new_shm" ]] && problem+="${problem:+; }new /dev/shm entries: $new_shm"
    if grep -qE "panicked|RUST_BACKTRACE" "$work/err"; then
        problem+="${problem:+; }a panic reached the learner"
    fi
    # A clear ending: the claims held (0), a claim failed (1), the lesson said why
    # it could not run (2, with an error line), or the lesson itself got the signal.
    case $rc in
        0|1) ;;
        2) grep -q '^error: ' "$work/err" || problem+="${problem:+; }exit 2 without an error line" ;;
        137|143) [[ $target == parent* ]] ||
            problem+="${problem:+; }the lesson died of a signal sent to a child" ;;
        *) problem+="${problem:+; }unexpected exit $rc" ;;
    esac

    what="$name: SIG$sig to the $target after ${delay_ms} ms"
    ((sent)) && hits=$((hits + 1)) || what+=" (it had already ended)"
    if [[ -n "$problem" ]]; then
        failures=$((failures + 1))
        echo "FAIL  $what: $problem (exit $rc)"
        sed 's/^/        | /' "$work/err" | tail -5
    else
        tally[$name]=$((${tally[$name]:-0} + 1))
        echo "ok    $what: exit $rc"
    fi
    # (bash's "Killed" notices for the lessons we signalled are not news here)
done 2>/dev/null

echo
for name in "${lessons[@]}"; do
    printf '  %-26s %3d runs held\n' "$name" "${tally[$name]:-0}"
done
echo "$hits of the $runs faults landed while the lesson ran"
echo "$((runs - failures)) passed, $failures failed"
((failures == 0))
