"""A client of a futures server job (another launch): MPIPoolExecutor(service=...)
with a service name, or HOST:PORT for the TCP address form."""
import os, sys
from oxmpi.futures import MPIPoolExecutor, get_comm_workers

def task(x):
    return x * x, os.getpid(), get_comm_workers().Get_size()

if __name__ == "__main__":
    service = sys.argv[1]
    if ":" in service:
        host, port = service.split(":")
        service = (host, int(port))
    with MPIPoolExecutor(service=service) as ex:
        results = list(ex.map(task, range(20)))
        print("workers", ex.num_workers, flush=True)
    assert [r[0] for r in results] == [x * x for x in range(20)]
    print("pids", len({r[1] for r in results}), "comm size", results[0][2], flush=True)
