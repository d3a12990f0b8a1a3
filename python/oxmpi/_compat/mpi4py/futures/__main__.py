"""``python -m mpi4py.futures script.py``: see ``oxmpi.futures``."""
from oxmpi.futures.__main__ import main

main(prog="python -m mpi4py.futures")
