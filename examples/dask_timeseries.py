"""Seed 004's Dask-MPI pattern: rank 0 runs the Dask scheduler, rank 1 this
script (the client), the other ranks are workers.

    mpiexec -n 4 python examples/dask_timeseries.py

Needs `pip install dask-mpi "dask[distributed,dataframe]"`. Dask talks over
TCP on the loopback interface here; MPI only starts the cluster.
"""
import dask
from dask.distributed import Client
from dask_mpi import initialize

initialize(interface="lo", dashboard=False)

with Client() as client:
    df = dask.datasets.timeseries(start="2000-01-01", end="2000-01-31", seed=0)
    means = df.groupby("name")[["x", "y"]].mean().compute()
    nrows = len(df)
    workers = len(client.scheduler_info()["workers"])
    print(f"timeseries: {nrows} rows, {len(means)} names, {workers} workers", flush=True)
