"""Entry point of workers (``python -m oxmpi.futures.server``;
``mpi4py.futures.server`` through the compatibility package).

Spawned by an MPIPoolExecutor, each worker merges the intercommunicator to
the client (the client is rank 0) and serves it until the executor shuts
down. Started by hand as a job of its own (``mpiexec -n N python -m
oxmpi.futures.server [--service NAME | --bind HOST --port PORT]``), the job
waits for one client, ``MPIPoolExecutor(service=NAME)`` or
``service=(HOST, PORT)`` in another job, serves it, and ends."""


def main():
    from oxmpi import MPI

    from . import _core

    parent = MPI.Comm.Get_parent()
    if parent == MPI.COMM_NULL:
        _core.server_main_service()
        return
    merged = parent.Merge(True)
    _core.set_comm_server(MPI.COMM_WORLD)
    try:
        _core.serve(merged, 0)
    finally:
        _core.del_comm_server()
        merged.Free()
        parent.Disconnect()


if __name__ == "__main__":
    main()
