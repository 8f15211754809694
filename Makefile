# One virtualenv, CPU torch from the pinned wheel; every target installs what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= outputs/demo

.PHONY: install test demo tiny-model tiny-filters anyblock-filters tiny-choice tiny-dream lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,eval]"
	touch $@

install: $(VENV)/.installed

# Two workers (pytest-xdist); tests sharing an expensive module fixture carry one xdist_group (one worker).
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup

demo: install
	$(VENV)/bin/learn2pd demo --out $(DEMO_OUT)

# The tiny LLaDA on the short families (tiny.yaml), which tiny-long.yaml and tiny-dream.yaml start from.
outputs/tiny-llada-short/model.safetensors: configs/pretrain/tiny.yaml | install
	$(PY) -m learn2pd.trainers.pretrain_tiny --config configs/pretrain/tiny.yaml --overwrite

# Rebuilds the shipped checkpoints/tiny-llada: the one target allowed to write there.
tiny-model: outputs/tiny-llada-short/model.safetensors
	$(PY) -m learn2pd.trainers.pretrain_tiny --config configs/pretrain/tiny-long.yaml --overwrite

# Rebuilds the shipped filters of checkpoints/tiny-llada from fresh traces (run it after tiny-model).
tiny-filters: install
	rm -rf outputs/traces/tiny
	$(VENV)/bin/collect-traces --config configs/collect/tiny.yaml
	$(VENV)/bin/train-filter --config configs/filter/tiny.yaml --out checkpoints/tiny-llada-filter --overwrite true
	$(VENV)/bin/train-filter --config configs/filter/tiny-eot.yaml --out checkpoints/tiny-llada-eot --overwrite true
	$(VENV)/bin/train-filter --config configs/filter/tiny-positionwise.yaml \
		--out checkpoints/tiny-llada-filter-positionwise --overwrite true

# One filter for every block length from on-policy traces at block 32 and in full diffusion (not shipped yet:
# docs/block-length.md), then its thresholds per block length chosen on validation problems.
anyblock-filters: install
	rm -rf outputs/traces/tiny-op-b32 outputs/traces/tiny-op-b256
	$(VENV)/bin/collect-traces --config configs/collect/tiny-on-policy.yaml
	$(VENV)/bin/collect-traces --config configs/collect/tiny-on-policy.yaml --block-length 256 --out outputs/traces/tiny-op-b256
	$(VENV)/bin/train-filter --config configs/filter/tiny-anyblock.yaml --overwrite true
	$(VENV)/bin/train-filter --config configs/filter/tiny-anyblock-eot.yaml --overwrite true
	$(VENV)/bin/learn2pd calibrate --filter outputs/filters/tiny-llada-filter-anyblock \
		--eot outputs/filters/tiny-llada-eot-anyblock --tasks val:suite --num-samples 40 --gen-length 256 \
		--block-lengths 32,256 --reference vanilla+eotp --thresholds 0.5,0.7,0.8,0.9,0.95,0.98

# The list-family model (several right answers: docs/block-length.md), from the shipped tiny LLaDA, and its
# any-block filter and End-of-Text predictor, calibrated on validation problems of its short families and list.
tiny-choice: install
	$(PY) -m learn2pd.trainers.pretrain_tiny --config configs/pretrain/tiny-choice.yaml --overwrite
	rm -rf outputs/traces/tiny-choice-b32 outputs/traces/tiny-choice-b128
	$(VENV)/bin/collect-traces --config configs/collect/tiny-choice.yaml
	$(VENV)/bin/collect-traces --config configs/collect/tiny-choice.yaml --block-length 128 --out outputs/traces/tiny-choice-b128
	$(VENV)/bin/train-filter --config configs/filter/tiny-choice-anyblock.yaml --out checkpoints/tiny-llada-choice-filter --overwrite true
	$(VENV)/bin/train-filter --config configs/filter/tiny-choice-eot.yaml --out checkpoints/tiny-llada-choice-eot --overwrite true
	$(VENV)/bin/learn2pd calibrate --model checkpoints/tiny-llada-choice --filter checkpoints/tiny-llada-choice-filter \
		--eot checkpoints/tiny-llada-choice-eot --tasks val:arith,sort,rev,list --num-samples 200 --gen-length 128 \
		--block-lengths 32,128 --reference best --thresholds 0.5,0.6,0.7,0.8,0.9,0.95 --overwrite

tiny-dream: outputs/tiny-llada-short/model.safetensors
	$(PY) -m learn2pd.trainers.pretrain_tiny --config configs/pretrain/tiny-dream.yaml --overwrite

lint: install
	$(VENV)/bin/ruff check learn2pd trainers tests benchmarks

clean:
	rm -rf $(VENV) outputs runs
