"""Utilities built on ``oxmpi.MPI`` (the counterparts of ``mpi4py.util``): dtlib, pkl5, pool, sync."""
