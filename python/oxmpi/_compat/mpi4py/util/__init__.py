"""``mpi4py.util`` is ``oxmpi.util``."""
