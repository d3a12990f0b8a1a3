"""``mpi4py.util.dtlib`` is ``oxmpi.util.dtlib``."""
import sys as _sys

import oxmpi.util.dtlib as _dtlib

_sys.modules[__name__] = _dtlib
