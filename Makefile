# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8765
STATE  ?= .fmos-state
PEERS  := tests/peers

.PHONY: run test venv peers clean

$(BIN)/fmos-mcp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,examples]'
	@touch $@

venv: $(BIN)/fmos-mcp

$(PEERS)/node_modules/.installed: $(PEERS)/package.json $(PEERS)/package-lock.json
	npm ci --prefix $(PEERS) --no-audit --no-fund --loglevel=error
	@touch $@

peers: $(PEERS)/node_modules/.installed

run: venv
	$(BIN)/fmos-mcp serve --transport http --host $(HOST) --port $(PORT) \
		--servers-dir servers.d --policies-dir policies --state-dir $(STATE)

test: venv peers
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(STATE) $(PEERS)/node_modules .pytest_cache
