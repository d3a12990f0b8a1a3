"""Hello world: every rank introduces itself.

    mpiexec -n 4 python examples/hello.py
"""

from oxmpi import MPI

comm = MPI.COMM_WORLD
print(f"Hello from rank {comm.Get_rank()} of {comm.Get_size()} on {MPI.Get_processor_name()}", flush=True)
