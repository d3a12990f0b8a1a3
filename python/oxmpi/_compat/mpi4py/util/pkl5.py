"""``mpi4py.util.pkl5``: see ``oxmpi.util.pkl5``."""
from oxmpi.util.pkl5 import *  # noqa: F401,F403
from oxmpi.util.pkl5 import __all__  # noqa: F401
from oxmpi.util.pkl5 import Pickle, _BigMPI, _bigmpi  # noqa: F401 - as mpi4py's module has them
