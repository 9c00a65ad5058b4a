# lingen — the two set-up commands are `make demo` and `make test`; everything else is optional.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# idle OpenMP threads sleep instead of spinning (small matmuls on a busy 2-core machine are 20-60x faster)
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test test-slow test-all lint bench aot gpu-wheels assets-pianoroll assets-shapes assets-video assets-vqvae assets-var var128 var256 clean-venv

# The venv is (re)installed when pyproject.toml changes; pip takes torch from the files on the machine.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@

demo: $(VENV)/.installed
	$(PY) -m app $(DEMO_ARGS)

# ruff, then the suite without the tests marked slow (about 15 min on this machine); `make test-slow` runs those
# (multi-process training, SIGKILL resume, the real-browser and load tests: about 15 min more), `make test-all`
# both. CI (.ci/run) runs `make test` and then `make test-slow`. pytest's exit code 5 (no tests ran) fails.
test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

test-all: test test-slow

# ruff check only: the code is wrapped by hand at 120 columns, not by ruff format (131 files would change)
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

bench: $(VENV)/.installed
	$(PY) -m kernels.bench --json benchmarks/results/kernels_cpu.json

# Compile every Triton kernel for the A100 and H100 / H200 targets on this CPU and report registers, spills,
# shared memory and occupancy (kernels/aot.py; fails on a spill or a kernel that cannot launch).
aot: $(VENV)/.installed
	TRITON_INTERPRET=0 $(PY) -m kernels.aot --arch 90 --json benchmarks/results/kernels_aot_sm90.json
	TRITON_INTERPRET=0 $(PY) -m kernels.aot --arch 80 --json benchmarks/results/kernels_aot_sm80.json

# Wheels the GPU machine lacks (it has no network) for benchmarks/gpu_kernels.sh: flash-linear-attention's
# kernels to compare against, and pytest for the CUDA run of the Triton tests.
gpu-wheels: $(VENV)/.installed
	$(PY) -m pip download --quiet --no-deps --dest .whl fla-core==0.6.0 einops pytest pluggy iniconfig packaging \
	  pygments pytest-timeout
	$(PY) -m pip download --quiet --no-deps --dest .whl --only-binary=:all: --platform any --python-version 3.10 \
	  --implementation py tomli exceptiongroup  # pytest's on Python < 3.11, pure-Python builds

clean-venv:
	rm -rf $(VENV)

# Re-train the shipped piano-roll model (80 min on this CPU; see training/recipes/pianoroll_hdit.sh).
assets-pianoroll: $(VENV)/.installed
	PY=$(PY) training/recipes/pianoroll_hdit.sh

# Re-train the shipped shapes-world models: the tiny CLIP, its place-aware copy, then the SANA-style DiT on
# layout captions (see training/recipes/shapes_sana_layout.sh; about 18 + 15 + 135 minutes on this CPU).
assets-shapes: $(VENV)/.installed
	PY=$(PY) ASSET_DIR=assets/shapes-sana training/recipes/shapes_sana_layout.sh

# Re-train the shipped text-to-video model (Diffusion Mamba on moving shapes; see
# training/recipes/moving_shapes_dim.sh; six stages, about 9.5 hours on this CPU).
assets-video: $(VENV)/.installed
	PY=$(PY) training/recipes/moving_shapes_dim.sh

# Re-train the shipped VAR tokenizer (multi-scale residual VQ-VAE; training/recipes/shapes_vqvae.sh, ~17 min).
assets-vqvae: $(VENV)/.installed
	PY=$(PY) training/recipes/shapes_vqvae.sh

# Re-train the shipped VAR transformer on that tokenizer (training/recipes/shapes_var.sh; it builds the tokenizer
# first when assets/shapes-vqvae is missing; about 100 minutes on this CPU).
assets-var: $(VENV)/.installed
	PY=$(PY) training/recipes/shapes_var.sh

# The 128×128 and 256×256 VARs FastVAR is measured on at a larger resolution, each warm-started from the model one
# size down (training/recipes/shapes_var_large.sh; about an hour and 70 minutes; written to runs/, not shipped).
var128: $(VENV)/.installed
	PY=$(PY) RES=128 training/recipes/shapes_var_large.sh

var256: $(VENV)/.installed
	PY=$(PY) RES=256 THREADS=2 training/recipes/shapes_var_large.sh
