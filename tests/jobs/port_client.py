"""Connects to the job of port_server.py (another launch) through the
published service name argv[1] and checks what arrives."""
import sys, time
from oxmpi import MPI
world = MPI.COMM_WORLD
service = sys.argv[1]
port = None
if world.rank == 0:
    for _ in range(1200):  # up to a minute: the server job may start slowly
        try:
            port = MPI.Lookup_name(service)
            break
        except MPI.Exception:
            time.sleep(0.05)
inter = world.Connect(port)
print("client", world.rank, "remote size", inter.Get_remote_size(), flush=True)
if world.rank == 0:
    print("client got", inter.recv(source=0, tag=7), flush=True)
for r in range(inter.Get_remote_size()):
    if r % world.size == world.rank:
        inter.send(("client", world.rank), dest=r, tag=8)
import numpy as np
if world.rank == 1:
    big = np.empty(1 << 20, dtype="f8")
    inter.Recv(big, source=0, tag=9)
    assert (big == np.arange(1 << 20)).all()
    print("client big ok", flush=True)
merged = inter.Merge(True)
total = merged.allreduce(merged.rank)
print("client", world.rank, "merged", merged.rank, merged.size, total, flush=True)
merged.Free()
inter.Barrier()
inter.Disconnect()
print("client", world.rank, "done", flush=True)
