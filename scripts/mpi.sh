#!/usr/bin/env bash
# The course's optional epilogue, the pool's map on MPI (mpi/, a Cargo workspace of
# its own that the course's two commands never build). Installs what it needs on
# Debian or Ubuntu (Open MPI, libclang for the `mpi` crate's bindgen, mpi4py for
# the Python twin), or says what to install elsewhere; builds it and runs it.
#
#   scripts/mpi.sh [-- LESSON-ARGS...]  install if needed, build, run the lesson
#   scripts/mpi.sh --ci                 and also: fmt, clippy, the tests, the
#                                       Python twin under mpirun, a smoke benchmark
#   scripts/mpi.sh --bench              the benchmark: serial, pool and MPI (~2 min)
#   scripts/mpi.sh --no-install ...     never install; fail if something is missing
#
# Every process it starts carries COURSE_RUN_ID (its own, unless the workshop
# runner gave one), so that a check at the end finds exactly this run's
# leftovers (a rank, an orted) and nothing of anyone else's.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

mode=run
install=1
extra=()
while (($#)); do
    case "$1" in
        --ci) mode=ci; shift ;;
        --bench) mode=bench; shift ;;
        --no-install) install=0; shift ;;
        -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done

say() { printf '\n--- %s\n' "$*"; }

# What is missing: Open MPI's launcher and headers, and libclang.
missing() {
    local need=()
    command -v mpirun >/dev/null 2>&1 || need+=(mpirun)
    command -v mpicc >/dev/null 2>&1 || need+=(mpicc)
    compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null ||
        compgen -G '/usr/lib/*/libclang*.so*' >/dev/null || need+=(libclang)
    echo "${need[*]}"
}

elsewhere() {
    cat >&2 <<'EOF'
Install an MPI library and libclang, then run this script again:
  Debian, Ubuntu:  apt-get install libopenmpi-dev openmpi-bin libclang-dev
  Fedora:          dnf install openmpi-devel clang-devel
                   (then: module load mpi/openmpi-x86_64)
  macOS:           brew install open-mpi llvm
  a cluster:       module load openmpi (or your site's MPI) and a clang module
The Python twin needs mpi4py too: python3 -m pip install mpi4py
EOF
}

missing_now=$(missing)
if [[ -n "$missing_now" ]]; then
    if ((install)) && command -v apt-get >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
        say "installing Open MPI and libclang (missing: $missing_now)"
        start=$SECONDS
        export DEBIAN_FRONTEND=noninteractive
        # Wait for another apt-get (a lock held elsewhere) rather than fail.
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
            libopenmpi-dev openmpi-bin libclang-dev >/dev/null
        echo "installed in $((SECONDS - start)) s"
    else
        echo "missing: $missing_now" >&2
        elsewhere
        exit 2
    fi
fi
mpirun --version | head -n 1

# mpirun's own flags for this machine (the lesson adds the same itself).
mpirun_flags=()
[[ $(id -u) -eq 0 ]] && mpirun_flags+=(--allow-run-as-root)
mpirun_flags+=(--bind-to none)

export COURSE_RUN_ID="${COURSE_RUN_ID:-mpi-$$-$(date +%s%N)}"
ours() {
    grep -lzxF -- "COURSE_RUN_ID=$COURSE_RUN_ID" /proc/[0-9]*/environ 2>/dev/null |
        sed 's#^/proc/\([0-9]*\)/environ$#\1#' | grep -vx "$$" || true
}
# Nothing of this run may be left: not a rank, not an orted.
no_leftovers() {
    local left
    sleep 0.5
    mapfile -t left < <(ours)
    # Our own subshells (the pipeline running this check) carry the id too.
    local real=()
    for pid in "${left[@]}"; do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) =~ ^(mpirun|orted|prted|mpi-map|mpi-map-rank|python3?)$ ]] &&
            real+=("$pid")
    done
    if ((${#real[@]})); then
        echo "processes left behind: ${real[*]} (killed now)" >&2
        kill -KILL "${real[@]}" 2>/dev/null || true
        return 1
    fi
    echo "no process of this run left behind"
}

say "building mpi/ (release)"
cd "$root/mpi"
cargo build --release --bins --quiet

case "$mode" in
    run)
        say "the lesson: target/release/mpi-map"
        status=0
        timeout --kill-after=5 300 target/release/mpi-map "${extra[@]}" || status=$?
        no_leftovers || status=1
        exit "$status"
        ;;
    bench)
        say "cargo bench (in mpi/): serial, the course's pool, MPI"
        cargo bench --quiet
        no_leftovers
        exit 0
        ;;
esac

# --ci
say "cargo fmt --check, clippy -D warnings (mpi/)"
cargo fmt --check
cargo clippy --release --all-targets --quiet -- -D warnings

say "the lesson (mpirun -n 2, a hostfile, a killed rank), every line within 80 columns"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
timeout --kill-after=5 300 target/release/mpi-map --ascii | tee "$out"
wide=$(awk 'length > 80' "$out")
if [[ -n "$wide" ]]; then
    echo "lines wider than 80 columns:" >&2
    echo "$wide" >&2
    exit 1
fi
no_leftovers

say "a killed rank, by hand: mpirun ends the job within seconds"
start=$(date +%s%N)
set +e
timeout --kill-after=5 60 mpirun -n 2 "${mpirun_flags[@]}" target/release/mpi-map-rank \
    --kill-rank 1 >/dev/null 2>"$out"
rc=$?
set -e
ms=$((($(date +%s%N) - start) / 1000000))
grep -m1 'exited on signal' "$out" || { cat "$out" >&2; echo "mpirun did not say which rank died" >&2; exit 1; }
if ((rc == 0 || rc == 124 || ms > 10000)); then
    echo "mpirun ended with $rc after $ms ms: expected a failure within 10 s" >&2
    exit 1
fi
echo "mpirun ended with exit code $rc after $ms ms"
no_leftovers

say "the Python twin under mpirun -n 2 (mpi4py)"
if ! python3 -c 'import mpi4py' 2>/dev/null; then
    start=$SECONDS
    # A binary wheel from PyPI (a few seconds), or built against this Open MPI.
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore mpi4py
    echo "mpi4py installed in $((SECONDS - start)) s"
fi
timeout --kill-after=5 120 mpirun -n 2 "${mpirun_flags[@]}" python3 "$root/docs/python/13_mpi_map.py"
no_leftovers

say "cargo test (in mpi/) and a smoke run of the benchmark"
cargo bench --quiet -- --quick
cargo test --release 2>&1
no_leftovers
