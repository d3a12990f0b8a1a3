"""``mpi4py.futures.server``: see ``oxmpi.futures.server``."""
from oxmpi.futures.server import main

if __name__ == "__main__":
    main()
