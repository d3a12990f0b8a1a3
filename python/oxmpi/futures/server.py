"""Entry point of spawned workers (``python -m mpi4py.futures.server``).

oxmpi cannot spawn processes yet, so nothing starts this module."""


def main():
    raise NotImplementedError(
        "oxmpi.futures.server serves spawned workers, and MPI.Comm.Spawn is not "
        "supported by oxmpi yet; use 'mpiexec -n N python -m oxmpi.futures script.py'"
    )


if __name__ == "__main__":
    main()
