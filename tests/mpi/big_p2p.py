"""Messages of 2 GiB and more between ranks 0 and 1 (counts past the
32-bit range), as buffers and as pickled objects.

1. Send/Recv of a BIG_P2P_GIB GiB (default 3) buffer of 8-byte integers;
   the receiver checks the status's counts and every element.
2. The same array sent as an object (send/recv): pickle protocol 5 takes
   it out of band, so neither side copies it. Peak memory proves it: the
   sender never holds more than about one array, and neither does the
   receiver (whose buffer of step 1 is gone by then).

Needs about 2 x BIG_P2P_GIB GiB of memory per rank (the array, and for a
moment a chunk of the expected values). Other ranks wait at the final
barrier. Every rank prints "OK big_p2p.py rank r".
"""

import os
import resource
import sys

import numpy as np

from oxmpi import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
NAME = os.path.basename(__file__)
GIB = float(os.environ.get("BIG_P2P_GIB", "3"))
NBYTES = int(GIB * (1 << 30)) // 8 * 8
N = NBYTES // 8
CHUNK = 1 << 22  # elements made or checked at a time (32 MiB)
# A copy of the array would double the peak; the interpreter, NumPy and a
# few chunks take the rest.
PEAK_LIMIT = 1.25 * NBYTES + (256 << 20)
MULT = np.uint64(0x9E3779B97F4A7C15)


def fail(msg):
    sys.stderr.write(f"[{NAME} rank {rank}] {msg}\n")
    sys.stderr.flush()
    comm.Abort(1)


def pattern(start, stop):
    return np.arange(start, stop, dtype=np.uint64) * MULT


def make():
    a = np.empty(N, dtype=np.uint64)
    for s in range(0, N, CHUNK):
        a[s : s + CHUNK] = pattern(s, min(s + CHUNK, N))
    return a


def verify(a, what):
    if a.dtype != np.uint64 or a.shape != (N,):
        fail(f"{what}: got {a.dtype} {a.shape}")
    for s in range(0, N, CHUNK):
        e = min(s + CHUNK, N)
        if not np.array_equal(a[s:e], pattern(s, e)):
            bad = s + int(np.nonzero(a[s:e] != pattern(s, e))[0][0])
            fail(f"{what}: element {bad} differs")


def peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


if rank == 0 and size > 1:
    a = make()
    comm.Send([a, MPI.UINT64_T], dest=1, tag=1)
    comm.send(a, dest=1, tag=2)
    del a
    if peak_rss() > PEAK_LIMIT:
        fail(f"peak memory {peak_rss() / 2**30:.1f} GiB for a {GIB} GiB array: pickling copied it")
elif rank == 1:
    a = np.empty(N, dtype=np.uint64)
    st = MPI.Status()
    comm.Recv([a, MPI.UINT64_T], source=0, tag=1, status=st)
    if st.Get_count(MPI.BYTE) != NBYTES or st.Get_count(MPI.UINT64_T) != N:
        fail(f"status counts {st.Get_count(MPI.BYTE)} bytes / {st.Get_count(MPI.UINT64_T)} elements")
    verify(a, "Recv")
    del a
    b = comm.recv(source=0, tag=2, status=st)
    if st.Get_count(MPI.BYTE) < NBYTES:
        fail(f"object message of {st.Get_count(MPI.BYTE)} bytes")
    verify(b, "recv (object)")
    if peak_rss() > PEAK_LIMIT:
        fail(f"peak memory {peak_rss() / 2**30:.1f} GiB for a {GIB} GiB array: unpickling copied it")
    del b

comm.Barrier()
print(f"OK {NAME} rank {rank} ({GIB} GiB, peak {peak_rss() / 2**30:.2f} GiB)", flush=True)
