"""Accepts a connection from another job (tests/test_jobs.py): publishes a
port under the service name argv[1], then exchanges messages, a large
array, a merged allreduce and a barrier with the client job."""
import sys, time
from oxmpi import MPI
world = MPI.COMM_WORLD
service = sys.argv[1]
port = MPI.Open_port() if world.rank == 0 else None
if world.rank == 0:
    MPI.Publish_name(service, port)
inter = world.Accept(port)
print("server", world.rank, "remote size", inter.Get_remote_size(), flush=True)
# point-to-point both ways
if world.rank == 0:
    inter.send({"hello": "from server"}, dest=0, tag=7)
got = inter.recv(source=world.rank % inter.Get_remote_size(), tag=8)
print("server", world.rank, "got", got, flush=True)
import numpy as np
big = np.arange(1 << 20, dtype="f8")
if world.rank == 0:
    inter.Send(big, dest=1, tag=9)
merged = inter.Merge(False)
total = merged.allreduce(merged.rank)
print("server", world.rank, "merged", merged.rank, merged.size, total, flush=True)
merged.Free()
inter.Barrier()
if world.rank == 0:
    MPI.Unpublish_name(service, port)
    MPI.Close_port(port)
inter.Disconnect()
print("server", world.rank, "done", flush=True)
