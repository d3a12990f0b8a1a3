"""``mpi4py.bench``: mpi4py's benchmark commands, run on oxmpi (see
``oxmpi.benchmarks``)."""
from oxmpi.benchmarks import COMMANDS, futures, helloworld, main, pingpong, ringtest  # noqa: F401

if __name__ == "__main__":
    main()
