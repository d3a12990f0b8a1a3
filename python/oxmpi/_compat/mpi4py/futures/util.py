"""``mpi4py.futures.util``: see ``oxmpi.futures.util``."""
from oxmpi.futures.util import *  # noqa: F401,F403
