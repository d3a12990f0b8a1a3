"""Utilities on top of ``oxmpi.MPI``: ``pkl5`` and ``pool``."""
