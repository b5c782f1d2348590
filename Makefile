# `make demo` and `make test` each create .venv when missing, install coldseg into it, and run.
# Python 3.11 (torch 2.13.0's CPU build): python3.11 when it is on PATH, else python3.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.coldseg-installed
DEMO_OUT ?= demo-out

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "coldseg needs Python 3.11; $(PYTHON) is " + sys.version.split()[0] + ": run make PYTHON=/path/to/python3.11")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/coldseg select examples/dubai_sample/images --budget 10% --image-size 64 --epochs 20 --min-steps 600 --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
