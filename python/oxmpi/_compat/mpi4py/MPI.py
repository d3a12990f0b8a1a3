"""``mpi4py.MPI`` is ``oxmpi.MPI``."""
import sys as _sys

import oxmpi.MPI as _MPI

_sys.modules[__name__] = _MPI
