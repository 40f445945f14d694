#!/usr/bin/env bash
# The workshop runner: builds every lesson once (optimised), then runs them in course
# order, each under a timeout, with a banner per lesson and a summary table at the
# end. Exits non-zero if any lesson failed, timed out, was killed, or left a process
# behind.
#
# The course order is the workspace member list in Cargo.toml (the one place it is
# kept); `common` is the kit, not a lesson.
#
# It only ever touches processes it started: each lesson runs with a run id of its
# own in its environment (COURSE_RUN_ID), which every child it forks inherits, so
# the check for leftovers (and the clean-up) finds exactly this run's processes,
# even when another copy of this script runs beside it.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/run_all.sh [--list] [--only NAME]... [--pause] [--timeout SECS]
                          [--mpi] [-- LESSON-ARGS...]

  --list          print the lessons in course order (number, crate, question)
  --only NAME     run only this lesson (repeat for several)
  --pause         wait for Enter between lessons and between the steps of a
                  lesson (only when stdin is a terminal)
  --timeout SECS  stop a lesson that runs longer than this (default 120)
  --mpi           then the optional epilogue, mpi-map (Pool.map on MPI), through
                  scripts/mpi.sh: it installs Open MPI if needed (apt-get)
  -- ARGS         pass ARGS to every lesson (for example: -- --ascii)
EOF
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

lessons() {
    sed -n '/^members = \[/,/^\]/p' Cargo.toml |
        grep -o '"crates/[^"]*"' | tr -d '"' | sed 's#^crates/##' | grep -vx common
}

# The question a lesson answers: the title line of its src/main.rs header.
question() {
    sed -n '1s/^\/\/! # [^:]*: //p' "crates/$1/src/main.rs"
}

only=()
pause=0
mpi=0
limit=120
extra=()
while (($#)); do
    case "$1" in
        --list)
            n=0
            while read -r name; do
                n=$((n + 1))
                printf '%2d  %s\n      %s\n' "$n" "$name" "$(question "$name")"
            done < <(lessons)
            printf ' +  %s\n      %s\n' mpi-map \
                "optional, with --mpi: what does Pool.map become beyond one machine?"
            exit 0 ;;
        --only) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; only+=("$2"); shift 2 ;;
        --pause) pause=1; shift ;;
        --mpi) mpi=1; shift ;;
        --timeout)
            [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || { echo "--timeout takes a whole number of seconds" >&2; exit 2; }
            limit=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
# Pausing needs someone at a terminal to press Enter.
[[ -t 0 ]] || pause=0

mapfile -t all < <(lessons)
selected=()
if ((${#only[@]})); then
    for name in "${only[@]}"; do
        if ! printf '%s\n' "${all[@]}" | grep -qx -- "$name"; then
            echo "no lesson named '$name'; the lessons are:" >&2
            printf '  %s\n' "${all[@]}" >&2
            exit 2
        fi
        selected+=("$name")
    done
else
    selected=("${all[@]}")
fi

echo "building the course (release)..."
cargo build --release --workspace --bins --quiet
bindir="${CARGO_TARGET_DIR:-$root/target}/release"

# The processes that carry this run id, the lesson's and its children's, wherever
# they were re-parented to: nothing of anyone else's.
ours() {
    grep -lzxF -- "COURSE_RUN_ID=$1" /proc/[0-9]*/environ 2>/dev/null |
        sed 's#^/proc/\([0-9]*\)/environ$#\1#' || true
}

run_id=""
lesson=""
stop_lesson() {
    if [[ -n "$lesson" ]]; then
        kill -TERM "$lesson" 2>/dev/null || true
        wait "$lesson" 2>/dev/null || true
    fi
    if [[ -n "$run_id" ]]; then
        mapfile -t pids < <(ours "$run_id")
        ((${#pids[@]})) && kill -KILL "${pids[@]}" 2>/dev/null
    fi
    echo "interrupted" >&2
    exit 130
}

names=()
results=()
times=()
failed=0
# One row of the summary. No run may leave a process behind: what is left of
# run $run_id is named, killed, and fails the row.
record() {
    local name=$1 result=$2 secs=$3 left
    mapfile -t left < <(ours "$run_id")
    if ((${#left[@]})); then
        echo "$name left processes behind: ${left[*]} (killed now)" >&2
        kill -KILL "${left[@]}" 2>/dev/null || true
        result="$result, LEFT ${#left[@]} PROCESSES"; failed=1
    fi
    run_id=""
    names+=("$name")
    results+=("$result")
    times+=("$secs")
}

for i in "${!selected[@]}"; do
    name=${selected[$i]}
    if ((pause)) && ((i > 0)); then
        read -r -p $'\npress Enter for the next lesson ('"$name"')... ' _
    fi
    printf '\n\n##### lesson %d/%d: %s #####\n\n' "$((i + 1))" "${#selected[@]}" "$name"
    run_id="run_all-$$-$i-$(date +%s%N)"
    start=$(date +%s%N)
    trap stop_lesson INT TERM
    if ((pause)); then
        # In the terminal's process group, so that the lesson can read the Enter
        # that moves it to its next step (COURSE_PAUSE=1).
        COURSE_RUN_ID=$run_id COURSE_PAUSE=1 timeout --foreground --kill-after=5 "$limit" \
            "$bindir/$name" "${extra[@]}" <&0 &
    else
        # timeout runs the lesson in a process group of its own and, on timeout,
        # kills the whole group (the lesson's forked children too). That group is
        # not the terminal's, so Ctrl-C reaches this script only: the trap passes
        # it on.
        COURSE_RUN_ID=$run_id timeout --kill-after=5 "$limit" "$bindir/$name" "${extra[@]}" &
    fi
    lesson=$!
    set +e
    wait "$lesson"
    rc=$?
    set -e
    lesson=""
    trap - INT TERM
    ms=$((($(date +%s%N) - start) / 1000000))
    secs=$(printf '%d.%02d' $((ms / 1000)) $((ms % 1000 / 10)))
    # 124: timeout stopped it; 137 after the limit: it ignored SIGTERM and was
    # killed after the grace period. A signal before the limit came from elsewhere.
    if ((rc == 0)); then
        result=ok
    elif ((rc == 124 || (rc == 137 && ms >= limit * 1000))); then
        result="TIMED OUT after ${limit} s"; failed=1
    elif ((rc > 128)); then
        sig=$(kill -l "$((rc - 128))" 2>/dev/null || echo "$((rc - 128))")
        result="KILLED by SIG$sig"; failed=1
    else
        result="FAILED (exit $rc)"; failed=1
    fi
    record "$name" "$result" "$secs"
done

# The optional epilogue: a workspace of its own (mpi/), which needs Open MPI.
if ((mpi)); then
    printf '\n\n##### optional: mpi-map (scripts/mpi.sh) #####\n\n'
    run_id="run_all-$$-mpi-$(date +%s%N)"
    start=$(date +%s%N)
    set +e
    COURSE_RUN_ID=$run_id timeout --kill-after=5 $((limit + 600)) \
        scripts/mpi.sh -- "${extra[@]}"
    rc=$?
    set -e
    ms=$((($(date +%s%N) - start) / 1000000))
    if ((rc == 0)); then result=ok; else result="FAILED (exit $rc)"; failed=1; fi
    record "mpi-map (optional)" "$result" "$(printf '%d.%02d' $((ms / 1000)) $((ms % 1000 / 10)))"
fi

printf '\n%-26s %-32s %8s\n' lesson result seconds
printf '%-26s %-32s %8s\n' ------ ------ -------
for i in "${!names[@]}"; do
    printf '%-26s %-32s %8s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}"
done
if ((failed)); then
    echo "some lessons did not hold" >&2
    exit 1
fi
echo "every lesson held; no process left behind"
