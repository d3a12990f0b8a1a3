"""Entry point of spawned workers (``python -m oxmpi.futures.server``;
``mpi4py.futures.server`` through the compatibility package).

MPIPoolExecutor spawns its workers with this module: each merges the
intercommunicator to the client (the client is rank 0) and serves it until
the executor shuts down."""


def main():
    from oxmpi import MPI

    from . import _core

    parent = MPI.Comm.Get_parent()
    if parent == MPI.COMM_NULL:
        raise RuntimeError(
            "oxmpi.futures.server serves the workers MPIPoolExecutor spawns; "
            "it is not meant to be started by hand"
        )
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
