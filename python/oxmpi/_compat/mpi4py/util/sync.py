"""``mpi4py.util.sync``: see ``oxmpi.util.sync``."""
from oxmpi.util.sync import *  # noqa: F401,F403
from oxmpi.util.sync import __all__  # noqa: F401
