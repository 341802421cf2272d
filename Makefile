# Set-up for a fresh machine: `make run` serves the app, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install browser run test bench load lint format corpus train clean gpu-check

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,train,ndif]"
	touch $(STAMP)

# The browser tests drive Debian's Chromium (never a Playwright browser download); skipped when on PATH.
browser:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium: $$(command -v chromium)"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y --no-install-recommends chromium; \
	elif command -v sudo >/dev/null 2>&1; then sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium; \
	else echo "Install Debian's chromium (apt-get install chromium) for the browser tests." >&2; exit 1; fi

run: install
	$(PY) app.py

# Two workers for the model-bound tiers (about 1.5x faster on two cores), then for the browser tier (each
# worker its own app and Chromium: 9.5 min instead of 15; its waits are long enough for a loaded machine).
test: install browser
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n 2 --ignore=tests/browser
	$(PY) -m pytest -q -n 2 tests/browser

# bertviz (compared in bench/attention.py) only needs IPython to render; its other
# requirements (boto3, sentencepiece, ...) send pip's resolver into a long backtrack.
bench: install
	$(PY) -m pip install --quiet --no-deps bertviz==1.4.1
	$(PY) -m pip install --quiet -c constraints.txt ipython
	$(PY) bench/trace_overhead.py
	$(PY) bench/attention.py
	$(PY) bench/threads.py
	$(PY) bench/tokenize.py
	$(PY) bench/tokens_per_word.py
	$(PY) bench/decoding.py
	$(PY) bench/class_strategies.py
	$(PY) bench/embeddings.py
	$(PY) bench/kv_cache.py
	$(PY) bench/lora.py
	$(PY) bench/attribution.py
	$(PY) bench/interventions.py
	$(PY) bench/retrieval.py
	$(PY) bench/page_load.py

# 30 simulated users against the app on loopback: latency per endpoint, errors, peak memory.
load: install
	$(PY) bench/load.py

# On a machine with a CUDA GPU: the contract tests and the benchmarks with every model on the GPU
# (bfloat16, placed by accelerate). Record the figures in the README's "CPU, GPU and ZeroGPU" section.
GPU_BENCHES := trace_overhead payloads kv_cache attribution decoding interventions
gpu-check: install
	EXPLORER_DEVICE=cuda $(PY) -c "import torch; assert torch.cuda.is_available(), 'no CUDA device here'"
	EXPLORER_DEVICE=cuda $(PY) -m pytest -q tests/test_contract.py tests/test_memory.py tests/test_gpu.py
	for b in $(GPU_BENCHES); do EXPLORER_DEVICE=cuda $(PY) bench/$$b.py || exit 1; done
	EXPLORER_DEVICE=cuda $(PY) bench/load.py --real --users 10

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# Debian packages the training corpus is read from (Austen, the World English Bible, Bierce, the
# Jargon File, and WordNet for stages run with --add-source wordnet). Only `make corpus` and `make
# train` need them; `make test` never does.
CORPUS_DEBS := r-cran-janeaustenr sword-text-web dict-devil jargon-text wordnet-base
corpus: install
	@missing="$$(for p in $(CORPUS_DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done)"; \
	if [ -z "$$missing" ]; then echo "corpus packages: installed"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y --no-install-recommends $$missing; \
	elif command -v sudo >/dev/null 2>&1; then sudo apt-get update && sudo apt-get install -y --no-install-recommends $$missing; \
	else echo "Install Debian's $$missing (apt-get install $$missing) for the training corpus." >&2; exit 1; fi
	$(PY) -m explorer.training.corpus

# The first bundled models (Shakespeare and the King James Bible only, made by this Makefile's train
# target at that commit): the current ones start from their layers (explorer/training/warm_start.py).
FIRST_MODELS := cdb888448c42bd9e093465c7aa3ec6d262ceea07
build/first/%:
	mkdir -p $@ && git archive $(FIRST_MODELS) models/$* | tar -x --strip-components=2 -C $@

# Rebuild the bundled models as they were made: a few hours on two free CPU cores (the step
# counts are what each run reached in its time budget on a shared machine; see each model card).
train: corpus build/first/tiny-gpt2 build/first/tiny-bert
	$(PY) -m explorer.training --family decoder --steps 900 --lr 6e-4 --warmup 100 --init-from build/first/tiny-gpt2 --out models/tiny-gpt2
	$(PY) -m explorer.training --family decoder --resume --steps 3568 --lr 6e-4 --threads 1 --out models/tiny-gpt2
	$(PY) -m explorer.training --family decoder --resume --steps 2400 --lr 3e-4 --copy-share 0.375 --copy-start --threads 1 --out models/tiny-gpt2
	$(PY) -m explorer.training --family decoder --resume --steps 1648 --lr 2e-4 --copy-share 0.2 --unlikelihood 2 --threads 1 --out models/tiny-gpt2
	$(PY) -m explorer.training --family decoder --resume --steps 1276 --lr 1e-4 --copy-share 0.2 --unlikelihood 2 --loop-starts 0.5 --loop-anchor 0.25 --threads 1 --out models/tiny-gpt2
	$(PY) -m explorer.training --family decoder --resume --steps 1500 --lr 2e-4 --copy-share 0.2 --unlikelihood 2 --loop-starts 0.5 --loop-anchor 0.25 --add-source wordnet --threads 1 --out models/tiny-gpt2
	$(PY) -m explorer.training --family encoder --steps 1688 --lr 5e-4 --warmup 100 --init-from build/first/tiny-bert --out models/tiny-bert
	$(PY) -m explorer.training --family encoder --resume --steps 6500 --lr 4e-4 --threads 1 --out models/tiny-bert
	$(PY) -m explorer.training --family encoder --resume --steps 5000 --lr 3e-4 --add-source wordnet --threads 1 --out models/tiny-bert
	$(PY) -m explorer.training --family encoder_decoder --steps 7123 --dropout 0 --short-share 0.25 --local-bias 1,0.5,0.25,0 --match-prior 8 --batch 16 --threads 1 --tokenizer-from models/tiny-t5 --out models/tiny-t5
	$(PY) -m explorer.training --family encoder_decoder --resume --steps 4736 --lr 5e-3 --dropout 0 --short-share 0.25 --add-source wordnet --add-source places --batch 16 --threads 1 --out models/tiny-t5
	$(PY) -m explorer.training --family encoder_decoder --resume --steps 7426 --lr 4e-3 --dropout 0 --short-share 0.25 --add-source wordnet --add-source places --batch 16 --threads 1 --out models/tiny-t5
	$(PY) -m explorer.training.gpt2_bpe --out models/gpt2-bpe
	$(PY) bench/embeddings.py --ship

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis tests/browser/artifacts
