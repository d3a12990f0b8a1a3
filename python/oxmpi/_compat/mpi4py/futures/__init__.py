"""``mpi4py.futures`` served by ``oxmpi.futures``."""
from oxmpi.futures import *  # noqa: F401,F403
from oxmpi.futures import __all__  # noqa: F401
