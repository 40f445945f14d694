#!/usr/bin/env bash
# The workshop runner: builds every lesson once (optimised), then runs them in course
# order, each under a timeout, with a banner per lesson and a summary table at the
# end. Exits non-zero if any lesson failed, timed out, or left a process behind.
#
# The course order is the workspace member list in Cargo.toml (the one place it is
# kept); `common` is the kit, not a lesson.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/run_all.sh [--list] [--only NAME]... [--pause] [--timeout SECS] [-- LESSON-ARGS...]

  --list          print the lessons in course order and exit
  --only NAME     run only this lesson (repeat for several)
  --pause         wait for Enter between lessons (only when stdin is a terminal)
  --timeout SECS  kill a lesson that runs longer than this (default 120)
  -- ARGS         pass ARGS to every lesson (for example: -- --ascii)
EOF
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

lessons() {
    sed -n '/^members = \[/,/^\]/p' Cargo.toml |
        grep -o '"crates/[^"]*"' | tr -d '"' | sed 's#^crates/##' | grep -vx common
}

only=()
pause=0
limit=120
extra=()
while (($#)); do
    case "$1" in
        --list) lessons; exit 0 ;;
        --only) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; only+=("$2"); shift 2 ;;
        --pause) pause=1; shift ;;
        --timeout)
            [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || { echo "--timeout takes a whole number of seconds" >&2; exit 2; }
            limit=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

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

names=()
results=()
times=()
failed=0
for i in "${!selected[@]}"; do
    name=${selected[$i]}
    if ((pause)) && ((i > 0)) && [[ -t 0 ]]; then
        read -r -p $'\npress Enter for the next lesson ('"$name"')... ' _
    fi
    printf '\n\n##### lesson %d/%d: %s #####\n\n' "$((i + 1))" "${#selected[@]}" "$name"
    start=$(date +%s%N)
    # timeout runs the lesson in a process group of its own and, on timeout, kills
    # the whole group (the lesson's forked children too). That group is not the
    # terminal's, so Ctrl-C reaches this script only: pass it on to the lesson.
    timeout --kill-after=5 "$limit" "$bindir/$name" "${extra[@]}" &
    lesson=$!
    trap 'kill -TERM "$lesson" 2>/dev/null; wait "$lesson" 2>/dev/null; echo "interrupted" >&2; exit 130' INT TERM
    set +e
    wait "$lesson"
    rc=$?
    set -e
    trap - INT TERM
    ms=$((($(date +%s%N) - start) / 1000000))
    secs=$(printf '%d.%02d' $((ms / 1000)) $((ms % 1000 / 10)))
    case $rc in
        0) result=ok ;;
        124|137) result="TIMED OUT after ${limit} s"; failed=1 ;;
        *) result="FAILED (exit $rc)"; failed=1 ;;
    esac
    names+=("$name")
    results+=("$result")
    times+=("$secs")
done

# No lesson may leave a process behind (orphans are re-parented, so look by path).
leftover=$(pgrep -a -f "^$bindir/" || true)
if [[ -n "$leftover" ]]; then
    echo "processes of the course still running after the run:" >&2
    echo "$leftover" >&2
    pkill -KILL -f "^$bindir/" || true
    failed=1
fi

printf '\n%-26s %-22s %8s\n' lesson result seconds
printf '%-26s %-22s %8s\n' ------ ------ -------
for i in "${!names[@]}"; do
    printf '%-26s %-22s %8s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}"
done
if ((failed)); then
    echo "some lessons did not hold" >&2
    exit 1
fi
echo "every lesson held; no process left behind"
