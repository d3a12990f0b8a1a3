"""Several threads of each rank communicate at once (MPI_THREAD_MULTIPLE):
object and buffer messages on their own tags, with the GIL released while
they wait.

Run under any launcher at any world size; every rank prints
"OK test_threads.py rank r".
"""

import os
import threading

import numpy as np

from oxmpi import MPI

NAME = os.path.basename(__file__)
comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
right, left = (rank + 1) % size, (rank - 1) % size
WHERE = f"[{NAME} rank {rank}/{size}]"
THREADS = 4
ROUNDS = 200


def worker(t, errors):
    try:
        for i in range(ROUNDS):
            obj = (t, i, "x" * (i * 100))
            sreq = comm.isend(obj, dest=right, tag=t)
            got = comm.recv(source=left, tag=t)
            sreq.wait()
            assert got == obj, f"{WHERE} thread {t} round {i}: object {got[:2]!r}"
            out = np.full(1000, t * 1000 + i, dtype=np.int64)
            back = np.empty_like(out)
            comm.Sendrecv(out, dest=right, sendtag=100 + t, recvbuf=back, source=left, recvtag=100 + t)
            assert (back == t * 1000 + i).all(), f"{WHERE} thread {t} round {i}: buffer {back[:3]}"
    except BaseException as e:  # noqa: BLE001 - reported by the main thread
        errors.append(e)


def main():
    assert MPI.Query_thread() == MPI.THREAD_MULTIPLE, WHERE
    errors = []
    threads = [threading.Thread(target=worker, args=(t, errors)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    comm.Barrier()
    print(f"OK {NAME} rank {rank}", flush=True)


if __name__ == "__main__":
    main()
