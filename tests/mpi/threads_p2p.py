"""Point-to-point from several Python threads at once (MPI_THREAD_MULTIPLE).

On every rank THREADS threads talk at the same time on COMM_WORLD, thread
t to the thread t of its neighbours (tag t): objects (isend/recv), buffers
(Irecv/Send/Wait, Sendrecv) and large messages that go by rendezvous, with
ANY_SOURCE receives. Every payload names its sender, thread and round and
is checked.

Blocking calls must release the GIL: a thread blocked in recv waits for a
message that another thread of the same process sends only after a stretch
of pure-Python work. Were the GIL held while waiting, that work could never
run and the job would hang (the test's timeout would end it).

Runs at any world size; every rank prints "OK threads_p2p.py rank r".
"""

import os
import sys
import threading

import numpy as np

from oxmpi import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
right, left = (rank + 1) % size, (rank - 1) % size
NAME = os.path.basename(__file__)
THREADS = 4
ROUNDS = 60
BIG = 1 << 20  # bytes: rendezvous, not eager
errors = []


def expect(cond, what):
    if not cond:
        errors.append(what)
        raise AssertionError(what)


def worker(t):
    try:
        for i in range(ROUNDS):
            # Objects: nonblocking send right, blocking receive from left.
            req = comm.isend({"from": rank, "thread": t, "round": i}, right, tag=t)
            st = MPI.Status()
            got = comm.recv(source=MPI.ANY_SOURCE, tag=t, status=st)
            req.wait()
            expect(got == {"from": left, "thread": t, "round": i}, f"thread {t} round {i}: got {got}")
            expect(st.source == left and st.tag == t, f"thread {t} round {i}: status {st.source}/{st.tag}")
            # Buffers, some of them large.
            n = BIG // 8 if i % 10 == 0 else 16 + i
            out = np.full(n, rank * 1_000_000 + t * 1000 + i, dtype=np.int64)
            inn = np.empty(n, dtype=np.int64)
            rreq = comm.Irecv([inn, MPI.INT64_T], left, tag=t)
            comm.Send([out, MPI.INT64_T], right, tag=t)
            rreq.Wait()
            expect(bool((inn == left * 1_000_000 + t * 1000 + i).all()), f"thread {t} round {i}: buffer")
            back = np.empty(n, dtype=np.int64)
            comm.Sendrecv(out, right, t, back, left, t)
            expect(bool((back == inn).all()), f"thread {t} round {i}: sendrecv")
    except Exception as exc:  # noqa: BLE001 - reported below, with the thread
        errors.append(f"thread {t}: {exc!r}")


def waiter(result):
    # Blocks (GIL released, or the worker below never runs) until the
    # other thread of this process has done its Python work and sent.
    result.append(comm.recv(source=rank, tag=999))


def python_work_then_send():
    total = 0
    for k in range(2_000_000):
        total += k & 7
    comm.send(("done", total), rank, tag=999)


assert MPI.Query_thread() == MPI.THREAD_MULTIPLE
threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
for th in threads:
    th.start()
for th in threads:
    th.join()
if errors:
    sys.stderr.write(f"[{NAME} rank {rank}] " + "; ".join(errors) + "\n")
    comm.Abort(1)

result = []
w = threading.Thread(target=waiter, args=(result,))
w.start()
python_work_then_send()
w.join()
assert result and result[0][0] == "done", result

comm.Barrier()
print(f"OK {NAME} rank {rank}", flush=True)
