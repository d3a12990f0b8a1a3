"""oxmpi: MPI for Python, written in Rust.

``from oxmpi import MPI`` gives an API-compatible replacement for
``mpi4py.MPI``; ``mpiexec -n 4 python script.py`` (installed with this
package) launches it on oxmpi's own shared-memory runtime.
"""

from ._oxmpi import __version__

__all__ = ["MPI", "__version__"]

