# Two set-up commands (see README):
#   make quickstart   install into .venv, then run `sakd quickstart` on the embedded data (CPU, < 5 min)
#   make test         install into .venv (with test tools), then run the test suite
#   make test-vision  the torchvision/timm tests in their own venv (.venv-vision, ~6 GB: torch 2.14.1)
#   make gpu-carry    what benchmarks/gpu_check.sh needs on the offline GPU machine: .whl/ (wheels of
#                     sakd's dependencies that its python lacks) and .gpu-data/fashion-mnist/
#   make test-onnx    the ONNX export test in its own venv (.venv-onnx: onnx, onnxscript, onnxruntime)
# constraints.txt pins the CPU wheel of torch (and every other dependency) for reproducible installs.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

VISION_VENV ?= .venv-vision
VBIN := $(VISION_VENV)/bin

ONNX_VENV ?= .venv-onnx
OBIN := $(ONNX_VENV)/bin

.PHONY: quickstart test test-vision test-onnx lint install gpu-carry

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate pyproject.toml constraints.txt
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(BIN)/sakd quickstart

test: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/pytest -n 2 --dist loadgroup --durations=15

# The optional extra sakd[vision] (torchvision + timm) needs another torch than the CPU pin above,
# so it gets its own venv, pinned by constraints-vision.txt.
$(VISION_VENV)/.installed: pyproject.toml constraints-vision.txt
	$(PYTHON) -m venv $(VISION_VENV)
	$(VBIN)/pip install --disable-pip-version-check -q -c constraints-vision.txt -e ".[dev,vision]"
	touch $@

test-vision: $(VISION_VENV)/.installed
	$(VBIN)/pytest -n 2 --dist loadgroup --durations=10 tests/vision tests/models/test_resnet_imagenet.py

lint: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

# The GPU machine (docs/performance.md, "Running the GPU checks") is offline, with its own python
# (3.12) holding torch, numpy, pillow, pyyaml, tqdm, tensorboard, matplotlib and pytest but not
# pydantic: download pydantic's wheels for that python here (the versions of constraints.txt), and
# copy the Fashion-MNIST IDX files (Debian package dataset-fashion-mnist) next to them.
GPU_PYTHON_VERSION ?= 3.12
GPU_WHEELS ?= .whl
GPU_DATA ?= .gpu-data
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist

gpu-carry:
	rm -rf $(GPU_WHEELS) && mkdir -p $(GPU_WHEELS)
	$(PYTHON) -m pip download -q --disable-pip-version-check --only-binary=:all: \
		--python-version $(GPU_PYTHON_VERSION) --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -c constraints.txt -d $(GPU_WHEELS) pydantic
	mkdir -p $(GPU_DATA)/fashion-mnist
	cp $(FASHION_MNIST)/*-ubyte.gz $(GPU_DATA)/fashion-mnist/
	@du -sh $(GPU_WHEELS) $(GPU_DATA)

# The optional extra sakd[onnx] (onnx, onnxscript, onnxruntime) on the same CPU torch pin, in its
# own venv so the main suite never needs it; pinned by constraints-onnx.txt.
$(ONNX_VENV)/.installed: pyproject.toml constraints.txt constraints-onnx.txt
	$(PYTHON) -m venv $(ONNX_VENV)
	$(OBIN)/pip install --disable-pip-version-check -q -c constraints.txt -c constraints-onnx.txt -e ".[dev,onnx]"
	touch $@

test-onnx: $(ONNX_VENV)/.installed
	$(OBIN)/pytest -m onnx tests/api/test_export_onnx.py
