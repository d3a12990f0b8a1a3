"""``mpi4py.util.pool``: see ``oxmpi.util.pool``."""
from oxmpi.util.pool import *  # noqa: F401,F403
from oxmpi.util.pool import __all__  # noqa: F401
