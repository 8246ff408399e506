# The two commands a newcomer needs (README): `make demo` and `make test`.
# Both create .venv on first use (torch==2.13.0 when the venv has no torch), install the package
# with its C++ extension (pip install --no-build-isolation -e .), then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet
export MAX_JOBS ?= 2
CSRC := $(wildcard csrc/*.h csrc/*.cpp csrc/*.cu csrc/*.cuh)

.PHONY: setup demo test test-python ctest check-cuda bench gpu-check clean

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
# float64), so CI exercises its kernels too; with one, the kernels run on the GPU.
test-python: setup
	TRITON_INTERPRET=$$($(PY) -c "import torch; print(int(not torch.cuda.is_available()))") \
	  $(PY) -m pytest -q -ra tests

# The test command: C++ unit tests of the torch-free core, the CUDA compile check, then the
# Python suite.
test: setup ctest check-cuda test-python

bench: setup
	$(PY) -m benchmarks.run --quick

# On a GPU machine without network whose image brings torch with CUDA, Triton and pytest: install,
# tests on CUDA, compute-sanitizer memcheck, trimmed GPU benchmarks, training step, auto table, in 9
# minutes (benchmarks/gpu_check.py). Uses the image's python; `--dry-run` prints the plan anywhere.
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) -m benchmarks.gpu_check

clean:
	rm -rf build bezier_kernels/_C*.so *.egg-info
