"""``mpi4py.util`` served by ``oxmpi.util``: dtlib, pkl5, pool, sync."""
