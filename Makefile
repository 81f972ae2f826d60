# translog developer entry points. Everything a fresh clone needs is installed from here.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DATA   ?= ./data
LISTEN ?= 127.0.0.1:8080
ORIGIN ?= localhost/dev-log
TESTS  ?= tests
PYTEST_ARGS ?= -q

.PHONY: run test chromium test-system bench lint fmt dev vectors soak clean system-deps

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,dev,objstore]'
	@touch $(STAMP)

dev: $(STAMP)

## make run: initialise ./data on first use (dev origin, keys, dev token) and serve on 127.0.0.1:8080
run: $(STAMP)
	@$(BIN)/translog dev-init --data $(DATA) --origin $(ORIGIN)
	@$(BIN)/translog serve --data $(DATA) --listen $(LISTEN)

## make system-deps: Debian packages the object-store tests use (Ceph RGW, nginx) and the ingest
## tests drive (rsyslog, syslog-ng); as root, ~45 s once
system-deps:
	@scripts/rgw.sh install
	@scripts/ingest-deps.sh install

## make chromium: the system chromium the explorer tests drive (Debian package; never a download)
CHROMIUM ?= /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium; \
	  else echo "$(CHROMIUM) is missing: run 'sudo apt-get install chromium'" >&2; exit 1; fi; }

## make test: the whole suite (TESTS=tests/unit to select)
test: $(STAMP) chromium
	@$(BIN)/python -m pytest $(PYTEST_ARGS) $(TESTS)

test-system: $(STAMP)
	@$(BIN)/python -m pytest $(PYTEST_ARGS) -m system tests

bench: $(STAMP)
	@$(BIN)/python -m benchmarks.run

lint: $(STAMP)
	@$(BIN)/ruff format --check translog tests benchmarks scripts
	@$(BIN)/ruff check translog tests benchmarks scripts
	@$(BIN)/mypy

fmt: $(STAMP)
	@$(BIN)/ruff format translog tests benchmarks scripts
	@$(BIN)/ruff check --fix translog tests benchmarks scripts

## make soak: the long reliability runs (25 SIGKILLs; 10 min at 70% of the measured max rate;
## parser, OpenAPI and HTTP fuzzing with the "soak" hypothesis profile; the distributed fault
## scenarios 5 times each). Figures: soak-results.json, fault-results.jsonl
soak: $(STAMP)
	@HYPOTHESIS_PROFILE=soak $(BIN)/python -m pytest $(PYTEST_ARGS) tests/reliability
	@$(BIN)/python scripts/soak.py --kills 25 --minutes 10 --out soak-results.json
	@rm -f fault-results.jsonl
	@TRANSLOG_FAULT_REPS=5 TRANSLOG_FAULT_OUT=fault-results.jsonl \
	  $(BIN)/python -m pytest $(PYTEST_ARGS) -s tests/reliability/test_faults.py tests/reliability/test_faults_witness.py tests/reliability/test_faults_clock.py

vectors: $(STAMP)
	@$(BIN)/python scripts/gen_vectors.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
