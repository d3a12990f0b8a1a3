"""``mpi4py.run``: see ``oxmpi.run``."""
from oxmpi.run import main  # noqa: F401
