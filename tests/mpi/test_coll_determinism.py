"""Floating-point reductions are reproducible (an MPI program).

Run under mpiexec at any world size. For every reduction (Allreduce,
Reduce to each root, Reduce_scatter, Reduce_scatter_block, Scan, Exscan,
their nonblocking forms, in place or not) on float32, float64, complex128
and long double data, small (one shared-memory round) and large (several
pipelined chunks), it checks that

* every rank that gets a result gets the same bits;
* the bits are those of oxmpi's documented combining order (the binomial
  tree over ranks for reductions, the left fold for scans), computed here
  with NumPy from everyone's inputs: a wrong order would show, because the
  inputs mix magnitudes so that floating-point addition is visibly not
  associative;
* a reduction's parts agree with each other (Reduce at any root and
  Reduce_scatter give the bits of Allreduce).

It prints "DIGEST <hex>" (a hash of every result, from rank 0) so that a
driver can compare runs, and "OK test_coll_determinism.py rank r" per rank.
"""

import hashlib
import os

import numpy as np

if __name__ == "__main__":
    from oxmpi import MPI

    NAME = os.path.basename(__file__)
    world = MPI.COMM_WORLD
    rank, size = world.Get_rank(), world.Get_size()
    digest = hashlib.sha256()

    def inputs(dtype, n, seed):
        """Rank-dependent values of mixed magnitudes (rounding matters)."""
        rng = np.random.default_rng([seed, rank])
        mag = 10.0 ** rng.integers(-8, 9, n)
        v = rng.standard_normal(n) * mag
        if np.dtype(dtype).kind == "c":
            v = v + 1j * rng.standard_normal(n) * mag[::-1]
        return v.astype(dtype)

    def tree(xs):
        """The binomial-tree order: acc[r] = acc[r] + acc[r + mask]."""
        acc = [x.copy() for x in xs]
        mask = 1
        while mask < len(acc):
            for r in range(0, len(acc) - mask, 2 * mask):
                acc[r] = acc[r] + acc[r + mask]
            mask <<= 1
        return acc[0]

    def fold(xs):
        acc = xs[0].copy()
        for x in xs[1:]:
            acc = acc + x
        return acc

    def bits(a):
        """The value bits (x87 long doubles: 10 of their 16 bytes)."""
        a = np.ascontiguousarray(a)
        if a.dtype == np.longdouble and np.finfo(np.longdouble).nmant == 63:
            return a.view(np.uint8).reshape(-1, a.itemsize)[:, :10].tobytes()
        return a.tobytes()

    def same_bits(a, b, what):
        assert bits(a) == bits(b), f"rank {rank}: {what}: bits differ"

    def everywhere_equal(a, what):
        h = hashlib.sha256(bits(a)).hexdigest()
        hs = world.allgather(h)
        assert len(set(hs)) == 1, f"{what}: ranks disagree {hs}"

    def record(a):
        digest.update(bits(a))

    dtypes = [np.float32, np.float64, np.complex128, np.longdouble]
    sizes = [1, 33, 4096, 150_001]  # one round ... several 256 KiB chunks
    for comm in (world, world.Dup()):
        for dtype in dtypes:
            for n in sizes:
                x = inputs(dtype, n, seed=n)
                xs = comm.allgather(x)
                want = tree(xs)
                out = np.empty_like(x)
                comm.Allreduce(x, out, MPI.SUM)
                same_bits(out, want, f"Allreduce {dtype.__name__} n={n}")
                everywhere_equal(out, "Allreduce")
                record(out)

                y = x.copy()
                comm.Allreduce(MPI.IN_PLACE, y, MPI.SUM)
                same_bits(y, want, "Allreduce in place")

                z = np.empty_like(x)
                req = comm.Iallreduce(x, z, MPI.SUM)
                while not req.Test():
                    pass
                same_bits(z, want, "Iallreduce")

                for root in range(size):
                    r = np.zeros_like(x)
                    comm.Reduce(x, r, MPI.SUM, root)
                    if rank == root:
                        same_bits(r, want, f"Reduce root={root}")

                counts = [n // size + (i < n % size) for i in range(size)]
                rs = np.empty(counts[rank], dtype)
                comm.Reduce_scatter(x, rs, counts, MPI.SUM)
                off = sum(counts[:rank])
                same_bits(rs, want[off : off + counts[rank]], "Reduce_scatter")

                block = n // size
                if block:
                    rb = np.empty(block, dtype)
                    comm.Reduce_scatter_block(x[: block * size], rb, MPI.SUM)
                    wb = tree([v[: block * size] for v in xs])
                    same_bits(rb, wb[rank * block : (rank + 1) * block], "Reduce_scatter_block")

                s = np.empty_like(x)
                comm.Scan(x, s, MPI.SUM)
                same_bits(s, fold(xs[: rank + 1]), "Scan")
                scans = comm.gather(s, root=0)
                if rank == 0:
                    record(np.concatenate(scans))

                e = np.empty_like(x)
                comm.Iexscan(x, e, MPI.SUM).Wait()
                if rank > 0:
                    same_bits(e, fold(xs[:rank]), "Exscan")

                if np.dtype(dtype).kind == "f":
                    p = np.empty_like(x)
                    comm.Allreduce(x, p, MPI.PROD)
                    acc = [v.copy() for v in xs]
                    mask = 1
                    while mask < size:
                        for q in range(0, size - mask, 2 * mask):
                            acc[q] = acc[q] * acc[q + mask]
                        mask <<= 1
                    same_bits(p, acc[0], "Allreduce PROD")
                    record(p)

    if rank == 0:
        print(f"DIGEST {digest.hexdigest()}", flush=True)
    print(f"OK {NAME} rank {rank}", flush=True)
