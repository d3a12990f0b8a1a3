"""``python -m mpi4py script.py``: run a program, aborting the whole job if
any rank raises."""
from oxmpi.run import main

main(prog="python -m mpi4py")
