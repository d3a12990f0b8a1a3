"""Serve ``import mpi4py`` from oxmpi inside a running interpreter.

    import oxmpi.compat; oxmpi.compat.install()
    from mpi4py import MPI          # this is oxmpi.MPI

oxmpi's launcher does this for every rank unless started with
``--no-mpi4py-compat``.
"""

import os
import sys

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_compat")


def install():
    """Puts oxmpi's ``mpi4py`` package first on ``sys.path``."""
    loaded = sys.modules.get("mpi4py")
    if loaded is not None and not getattr(loaded, "__file__", "").startswith(PATH):
        raise RuntimeError("a different mpi4py is already imported in this interpreter")
    if PATH not in sys.path:
        sys.path.insert(0, PATH)
