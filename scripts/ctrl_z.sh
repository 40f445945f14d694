#!/usr/bin/env bash
# Ctrl-Z, then fg, for every lesson. Each lesson runs as a job of its own (its own
# process group, as a shell with job control starts it). At a random moment of its
# run the job is stopped as a whole: SIGSTOP to the group, where Ctrl-Z sends
# SIGTSTP. It stays stopped longer than any of the lessons' bounds on a peer (the
# longest is 20 s), then it is continued with SIGCONT to the group, as `fg` does. Time the whole job
# spent stopped is nobody's fault, so every claim must still hold (exit 0), and
# nothing may be left behind.
#
#   scripts/ctrl_z.sh                  every lesson once, a random seed
#   scripts/ctrl_z.sh --seed 7 --stopped 10 --only mp-sync
#
# It touches only processes it started: the job's process group, and (for the
# leftover check) the processes that carry its run id (COURSE_RUN_ID).
set -euo pipefail
usage() {
    cat <<'EOF'
usage: scripts/ctrl_z.sh [--seed S] [--stopped SECS] [--only NAME]... [--no-build]
  --seed S        seed for the moments of the stops (default: random)
  --stopped SECS  how long each job stays stopped (default 21)
  --only NAME     only this lesson (repeat for several)
  --no-build      use the optimised binaries already built
EOF
}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
seed=$((($(date +%s%N) / 1000) % 32768))
stopped=21
only=()
build=1
while (($#)); do
    case "$1" in
        --seed) [[ "${2:-}" =~ ^[0-9]+$ ]] || { usage >&2; exit 2; }; seed=$2; shift 2 ;;
        --stopped) [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || { usage >&2; exit 2; }; stopped=$2; shift 2 ;;
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

work=$(mktemp -d)
job=""
id=""
cleanup() {
    if [[ -n "$job" ]]; then
        kill -CONT -- "-$job" 2>/dev/null || true
        kill -KILL -- "-$job" 2>/dev/null || true
    fi
    if [[ -n "$id" ]]; then
        mapfile -t left < <(ours "$id")
        ((${#left[@]})) && kill -KILL "${left[@]}" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

RANDOM=$seed
echo "ctrl-z: each lesson stopped as a whole for ${stopped} s, then continued (seed $seed)"
set -m # job control: each background job gets a process group of its own
failures=0
for name in "${lessons[@]}"; do
    # How long it runs undisturbed: the stop lands inside the first 80% of that.
    start=$(date +%s%N)
    timeout 120 "$bindir/$name" --ascii >/dev/null 2>&1 </dev/null ||
        { echo "$name fails without any stop; fix that first" >&2; exit 1; }
    took=$((($(date +%s%N) - start) / 1000000))
    delay_ms=$(((RANDOM * 32768 + RANDOM) % (took * 4 / 5 + 1)))
    id="ctrl-z-$$-$name"
    ls /dev/shm >"$work/shm.before" 2>/dev/null || true

    COURSE_RUN_ID=$id "$bindir/$name" --ascii >"$work/out" 2>"$work/err" </dev/null &
    job=$!
    sleep "$((delay_ms / 1000)).$(printf '%03d' $((delay_ms % 1000)))"
    landed="after ${delay_ms} ms"
    if kill -STOP -- "-$job" 2>/dev/null; then
        sleep "$stopped"
        kill -CONT -- "-$job" 2>/dev/null || true
    else
        landed+=" (it had already ended)"
    fi
    set +e
    timeout_s=120
    for ((t = 0; t < timeout_s * 10; t++)); do
        kill -0 "$job" 2>/dev/null || break
        [[ $(awk '{print $3}' "/proc/$job/stat" 2>/dev/null) == Z ]] && break
        sleep 0.1
    done
    problem=""
    if kill -0 "$job" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$job/stat" 2>/dev/null) != Z ]]; then
        problem="did not end within ${timeout_s} s"
        kill -KILL -- "-$job" 2>/dev/null
    fi
    wait "$job" 2>/dev/null
    rc=$?
    set -e
    job=""
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
    ((rc == 0)) || problem+="${problem:+; }exit $rc, not 0"
    if [[ -n "$problem" ]]; then
        failures=$((failures + 1))
        echo "FAIL  $name: stopped ${landed}: $problem"
        sed 's/^/        | /' "$work/err" | tail -5
    else
        echo "ok    $name: stopped ${landed}, every claim held"
    fi
done
echo "$((${#lessons[@]} - failures)) passed, $failures failed"
((failures == 0))
