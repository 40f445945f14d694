# shellcheck shell=bash
# What the fault scripts (torture.sh, ctrl_z.sh) share, sourced by them from the
# repository's root: the lessons to run, the optimised build, and the processes of
# one run.

# lessons=(...): every lesson in course order, or the names given, each checked
# against that list (exit 2 for a name that is not a lesson).
select_lessons() {
    mapfile -t lessons < <(bash scripts/run_all.sh --list | sed -n 's/^ *[0-9][0-9]*  //p')
    if (($#)); then
        local name
        for name in "$@"; do
            printf '%s\n' "${lessons[@]}" | grep -qx -- "$name" || { echo "no lesson named '$name'" >&2; exit 2; }
        done
        lessons=("$@")
    fi
}

# Build the course (optimised) unless $1 is 0.
build_course() {
    if (($1)); then
        echo "building the course (release)..."
        cargo build --release --workspace --bins --quiet
    fi
}

# Where the optimised binaries are.
course_bindir() {
    echo "${CARGO_TARGET_DIR:-$PWD/target}/release"
}

# The processes carrying run id $1 (COURSE_RUN_ID in their environment, inherited
# by every child a lesson forks), wherever they were re-parented to.
ours() {
    grep -lzxF -- "COURSE_RUN_ID=$1" /proc/[0-9]*/environ 2>/dev/null |
        sed 's#^/proc/\([0-9]*\)/environ$#\1#' || true
}
