"""2-D heat diffusion on a periodic grid, decomposed over a Cartesian
process grid.

Each rank owns a block of the global grid plus one layer of ghost cells.
Every step it swaps edges with its four neighbours (found with
``Cartcomm.Shift``) by ``Sendrecv`` of subarray datatypes that describe
one row or one column of the local array in place, so nothing is copied
by hand; then it applies the explicit 5-point update. At the end every
rank checks its block against the same computation done serially (with
``numpy.roll``), which must agree bit for bit.

    mpiexec -n 6 python examples/heat2d.py [NX NY STEPS]
"""

import sys

import numpy as np

from oxmpi import MPI

ALPHA = 0.1  # diffusion number: stable for ALPHA <= 0.25


def initial(nx, ny):
    """The initial temperature on the whole grid: a smooth wave plus a
    hot square, so that diffusion has something to do everywhere."""
    x = np.arange(nx)[:, None] / nx
    y = np.arange(ny)[None, :] / ny
    u = np.sin(2 * np.pi * x) * np.cos(4 * np.pi * y)
    u[nx // 4 : nx // 2, ny // 3 : ny // 2] += 2.0
    return u


def step(u, up, down, left, right):
    """One explicit step, written once for both the serial and the
    parallel code so that both round alike."""
    return u + ALPHA * ((up + down + left + right) - 4.0 * u)


def serial(nx, ny, steps):
    u = initial(nx, ny)
    for _ in range(steps):
        u = step(
            u,
            np.roll(u, 1, axis=0),
            np.roll(u, -1, axis=0),
            np.roll(u, 1, axis=1),
            np.roll(u, -1, axis=1),
        )
    return u


def block(n, parts, index):
    """The [start, stop) of block `index` when n cells are split into
    `parts` blocks whose sizes differ by at most one."""
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return start, start + base + (index < extra)


def halo_types(lnx, lny):
    """Subarray datatypes for the edges and ghost layers of an
    (lnx + 2) x (lny + 2) array: {name: datatype}."""
    shape = [lnx + 2, lny + 2]
    row, col = [1, lny], [lnx, 1]
    where = {
        "send_up": (row, [1, 1]),  # first interior row
        "send_down": (row, [lnx, 1]),  # last interior row
        "recv_up": (row, [0, 1]),  # ghost row above
        "recv_down": (row, [lnx + 1, 1]),  # ghost row below
        "send_left": (col, [1, 1]),
        "send_right": (col, [1, lny]),
        "recv_left": (col, [1, 0]),
        "recv_right": (col, [1, lny + 1]),
    }
    return {
        name: MPI.DOUBLE.Create_subarray(shape, sub, start).Commit()
        for name, (sub, start) in where.items()
    }


def parallel(comm, nx, ny, steps):
    """Runs the simulation; returns (this rank's block of the result, its
    global row and column ranges)."""
    dims = MPI.Compute_dims(comm.size, [0, 0])
    cart = comm.Create_cart(dims, periods=[True, True])
    px, py = cart.Get_coords(cart.rank)
    x0, x1 = block(nx, dims[0], px)
    y0, y1 = block(ny, dims[1], py)
    lnx, lny = x1 - x0, y1 - y0
    u = np.zeros((lnx + 2, lny + 2))
    u[1:-1, 1:-1] = initial(nx, ny)[x0:x1, y0:y1]
    t = halo_types(lnx, lny)
    up, down = cart.Shift(0, 1)  # source = rank above, dest = rank below
    left, right = cart.Shift(1, 1)
    for _ in range(steps):
        # Rows: send my last row down while receiving my upper ghost row
        # from above, then the other way round; the same for columns.
        cart.Sendrecv([u, 1, t["send_down"]], down, 0, [u, 1, t["recv_up"]], up, 0)
        cart.Sendrecv([u, 1, t["send_up"]], up, 1, [u, 1, t["recv_down"]], down, 1)
        cart.Sendrecv([u, 1, t["send_right"]], right, 2, [u, 1, t["recv_left"]], left, 2)
        cart.Sendrecv([u, 1, t["send_left"]], left, 3, [u, 1, t["recv_right"]], right, 3)
        inner = step(
            u[1:-1, 1:-1],
            u[:-2, 1:-1],
            u[2:, 1:-1],
            u[1:-1, :-2],
            u[1:-1, 2:],
        )
        u[1:-1, 1:-1] = inner
    for d in t.values():
        d.Free()
    cart.Free()
    return u[1:-1, 1:-1].copy(), (x0, x1), (y0, y1)


def main(argv):
    nx, ny, steps = (int(a) for a in argv[1:4]) if len(argv) > 3 else (48, 36, 50)
    comm = MPI.COMM_WORLD
    mine, (x0, x1), (y0, y1) = parallel(comm, nx, ny, steps)
    expected = serial(nx, ny, steps)[x0:x1, y0:y1]
    diff = float(np.max(np.abs(mine - expected))) if mine.size else 0.0
    worst = comm.allreduce(diff, op=MPI.MAX)
    total = comm.allreduce(float(mine.sum()), op=MPI.SUM)
    if comm.rank == 0:
        print(
            f"heat2d: {nx}x{ny} grid, {steps} steps on {comm.size} ranks: "
            f"total heat {total:.12f}, max difference from serial {worst:g}"
        )
    return 0 if worst == 0.0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
