# The README's quick start: `make demo` and `make test`. CI runs `make test` via .ci/run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test check lint typecheck pytest soak demo bench clean mosquitto guarantees

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,demo]'
	touch $(STAMP)

# Tests start their own Mosquitto on free loopback ports; install the binary when missing.
mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
		echo "installing mosquitto"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto) \
		|| { echo "cannot install mosquitto (need root and the Debian mirror)"; exit 1; }; }

lint: $(STAMP)
	$(BIN)/ruff check agent tui relay common cli demo tests bench
	$(BIN)/ruff format --check agent tui relay common cli demo tests bench

typecheck: $(STAMP)
	$(BIN)/mypy agent
	$(BIN)/mypy --strict tui relay common cli demo tests bench

check: lint typecheck

# Two pytest-xdist workers: each has its own session Mosquitto on a free port and its own
# tmp_path tree; databases are made per test under random names. PYTEST_WORKERS=0 runs
# everything in one process.
PYTEST_WORKERS ?= 2

pytest: $(STAMP) mosquitto
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test: check pytest

# `make test` SOAK_RUNS times (default 3) in a fresh clone of HEAD, one core kept busy.
soak:
	bash tests/soak.sh

# Guarantee-breaking mutations, one at a time in a scratch copy: each must fail its tests
# (tests/guarantees.py; GUARANTEES=name1,name2 for a subset).
guarantees: $(STAMP) mosquitto
	$(BIN)/python -m tests.guarantees

# No broker needed: the demo embeds amqtt when the mosquitto binary is missing.
demo: $(STAMP)
	$(BIN)/distillsync demo

bench: $(STAMP) mosquitto
	$(BIN)/python -m bench
	$(BIN)/python -m bench.consume

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
