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

On the system-MPI backend predefined reductions are the MPI library's own
(MPI_Allreduce, MPI_Reduce, ...), whose combining order is the library's
and may differ between roots, between Reduce and Allreduce, and between
blocking and nonblocking forms. What holds there, and is checked instead:

* every rank that gets an Allreduce result gets the same bits;
* calling the same reduction again with the same arguments on the same
  communicator gives the same bits (MPI's advice to implementors, which
  MPICH and Open MPI follow);
* every result is the exact one to within the rounding error of some
  combining order: |got - want| <= 2 * size * eps * (sum of |inputs|).

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
    # Reductions of the MPI library: its order, not oxmpi's (see above).
    LIBRARY_ORDER = "system-MPI backend" in MPI.Get_library_version()
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

    def near(got, want, scale, what):
        """Within the rounding error of any order of `size` operands."""
        eps = np.finfo(got.dtype).eps
        err = np.abs(got.astype(np.clongdouble) - want.astype(np.clongdouble))
        bound = 2 * size * eps * scale.astype(np.longdouble)
        worst = int(np.argmax(err - bound)) if err.size else 0
        assert np.all(err <= bound), (
            f"rank {rank}: {what}: {got[worst]!r} is not {want[worst]!r} within {bound[worst]!r}"
        )

    def check(run, want, scale, what):
        """The reduction `run()` against oxmpi's order `want` (bitwise), or,
        on the library's reductions, against itself repeated (bitwise) and
        against `want` within rounding (`scale`: sum of the |operands|)."""
        got = run()
        if not LIBRARY_ORDER:
            same_bits(got, want, what)
            return got
        same_bits(run(), got, f"{what} repeated")
        near(got, want, scale, what)
        return got

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
                mags = [np.abs(v) for v in xs]
                scale = tree(mags)

                def allreduce():
                    out = np.empty_like(x)
                    comm.Allreduce(x, out, MPI.SUM)
                    return out

                out = check(allreduce, want, scale, f"Allreduce {dtype.__name__} n={n}")
                everywhere_equal(out, "Allreduce")
                record(out)

                def allreduce_in_place():
                    y = x.copy()
                    comm.Allreduce(MPI.IN_PLACE, y, MPI.SUM)
                    return y

                check(allreduce_in_place, want, scale, "Allreduce in place")

                def iallreduce():
                    z = np.empty_like(x)
                    req = comm.Iallreduce(x, z, MPI.SUM)
                    while not req.Test():
                        pass
                    return z

                check(iallreduce, want, scale, "Iallreduce")

                for root in range(size):

                    def reduce():
                        r = np.zeros_like(x)
                        comm.Reduce(x, r, MPI.SUM, root)
                        return r

                    if rank == root:
                        check(reduce, want, scale, f"Reduce root={root}")
                    else:
                        # The root's check calls it once or twice; so do the others.
                        for _ in range(1 + LIBRARY_ORDER):
                            reduce()

                counts = [n // size + (i < n % size) for i in range(size)]
                off = sum(counts[:rank])
                part = slice(off, off + counts[rank])

                def reduce_scatter():
                    rs = np.empty(counts[rank], dtype)
                    comm.Reduce_scatter(x, rs, counts, MPI.SUM)
                    return rs

                check(reduce_scatter, want[part], scale[part], "Reduce_scatter")

                block = n // size
                if block:
                    mine = slice(rank * block, (rank + 1) * block)
                    wb = tree([v[: block * size] for v in xs])

                    def reduce_scatter_block():
                        rb = np.empty(block, dtype)
                        comm.Reduce_scatter_block(x[: block * size], rb, MPI.SUM)
                        return rb

                    check(reduce_scatter_block, wb[mine], scale[mine], "Reduce_scatter_block")

                def scan():
                    s = np.empty_like(x)
                    comm.Scan(x, s, MPI.SUM)
                    return s

                s = check(scan, fold(xs[: rank + 1]), fold(mags[: rank + 1]), "Scan")
                scans = comm.gather(s, root=0)
                if rank == 0:
                    record(np.concatenate(scans))

                def iexscan():
                    e = np.empty_like(x)
                    comm.Iexscan(x, e, MPI.SUM).Wait()
                    return e

                if rank > 0:
                    check(iexscan, fold(xs[:rank]), fold(mags[:rank]), "Exscan")
                else:
                    for _ in range(1 + LIBRARY_ORDER):
                        iexscan()

                if np.dtype(dtype).kind == "f":
                    acc = [v.copy() for v in xs]
                    mask = 1
                    while mask < size:
                        for q in range(0, size - mask, 2 * mask):
                            acc[q] = acc[q] * acc[q + mask]
                        mask <<= 1

                    def allreduce_prod():
                        p = np.empty_like(x)
                        comm.Allreduce(x, p, MPI.PROD)
                        return p

                    # A product's rounding error is relative to the product.
                    p = check(allreduce_prod, acc[0], np.abs(acc[0]), "Allreduce PROD")
                    everywhere_equal(p, "Allreduce PROD")
                    record(p)

    if rank == 0:
        print(f"DIGEST {digest.hexdigest()}", flush=True)
    print(f"OK {NAME} rank {rank}", flush=True)
