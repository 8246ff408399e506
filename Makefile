# The two commands a newcomer needs (README): `make demo` and `make test`.
# Both create .venv on first use (torch==2.13.0 when the venv has no torch), install the package
# with its C++ extension (pip install --no-build-isolation -e .), then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet
export MAX_JOBS ?= 2
CSRC := $(wildcard csrc/*.h csrc/*.cpp csrc/*.cu csrc/*.cuh)

.PHONY: setup demo test test-python ctest bench clean

$(VENV)/.deps: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) torch==2.13.0
	$(PIP) "setuptools>=77" wheel ninja pybind11 numpy
	touch $@

$(VENV)/.built: $(VENV)/.deps setup.py $(CSRC)
	$(PIP) --no-build-isolation -e ".[test,train,triton]"
# torchcfm alone: its declared requirements pull torchvision, which would replace torch (pyproject.toml)
	$(PIP) --no-deps torchcfm==1.0.7
	$(PY) -c "import bezier_kernels as bk; info = bk.available_backends(); \
	  assert info['cpp'].available, 'the C++ extension did not build: ' + info['cpp'].reason"
	touch $@

setup: $(VENV)/.built

# The main job: Bezier distillation against k-RF distillation on a 2-D pair with the embedded defaults
# (bezier_distill.config.CompareStage), 3 seeds; prints the table and where the figures are. Rerunning
# resumes (a finished run just prints its table again).
demo: setup
	$(PY) -m bezier_distill compare --out runs/demo

ctest:
	cmake -S . -B build/cmake -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
	cmake --build build/cmake
	ctest --test-dir build/cmake --output-on-failure

test-python: setup
	$(PY) -m pytest -q -ra tests

# The test command: C++ unit tests of the torch-free core, then the Python suite.
test: setup ctest test-python

bench: setup
	$(PY) -m benchmarks.run --quick

clean:
	rm -rf build bezier_kernels/_C*.so *.egg-info
