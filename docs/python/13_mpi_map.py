"""13_mpi_map.py: Pool.map beyond one machine, with mpi4py.

The twin of the mpi-map lesson: rank 0 holds the items (the tutorial's workload,
sum(x*x for x in range(1000)) for each of range(10000)), scatters one contiguous
share to every rank, each rank maps its share, and rank 0 gathers the results in
rank order, which is the items' order. Only rank 0 prints.

    mpirun -n 2 python3 docs/python/13_mpi_map.py        (add --allow-run-as-root
    mpirun -n 2 python3 docs/python/13_mpi_map.py 1000    as root, as in CI)

mpi4py's other way to the same result is a pool that hands out tasks one by one:

    from mpi4py.futures import MPIPoolExecutor
    with MPIPoolExecutor() as pool:          # mpiexec -n 3 python3 -m mpi4py.futures x.py
        results = list(pool.map(work, range(10000), chunksize=1250))

Without mpi4py this program says so and exits 0 (scripts/mpi.sh installs it).
"""

import os
import sys
import time

try:
    from mpi4py import MPI
except ImportError:
    print("skipped: mpi4py is not installed "
          "(scripts/mpi.sh installs it; or: python3 -m pip install mpi4py)")
    sys.exit(0)


def work(n):
    return sum(x * x for x in range(1000))


def shares(items, ranks):
    """Contiguous shares, as even as can be, in rank order."""
    each, extra = divmod(items, ranks)
    out, first = [], 0
    for r in range(ranks):
        count = each + (1 if r < extra else 0)
        out.append(range(first, first + count))
        first += count
    return out


def main():
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    items = int(sys.argv[1]) if len(sys.argv) > 1 else 10000

    # Rank 0: the data lives here; one share leaves for each rank.
    parts = [list(s) for s in shares(items, size)] if rank == 0 else None
    mine = comm.scatter(parts, root=0)

    # Every rank: the local map.
    start = time.perf_counter()
    out = [(x, work(x)) for x in mine]
    took = time.perf_counter() - start

    # Rank 0 gathers the results in rank order, with who did what.
    me = (os.getpid(), MPI.Get_processor_name(), len(mine), mine[0] if mine else items)
    gathered = comm.gather((me, took, out), root=0)
    if rank != 0:
        return 0
    results = []
    for r, ((pid, host, count, first), took, part) in enumerate(gathered):
        print(f"rank {r} of {size}: pid {pid} on {host}, {count} items from {first}, "
              f"mapped in {took * 1e3:.1f} ms")
        results.extend(part)
    serial = [(x, work(x)) for x in range(items)]
    ok = results == serial
    print(f"rank 0 gathered {len(results)} results; equal to the serial map, "
          f"in order: {ok}")
    print(f"{'ok' if ok else 'FAIL'} check: the gathered list equals the serial one")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
