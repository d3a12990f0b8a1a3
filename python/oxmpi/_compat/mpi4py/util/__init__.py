"""``mpi4py.util`` served by ``oxmpi.util``."""
