# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv once;
# the install is redone only when pyproject.toml or constraints.txt change.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
EXTRAS  ?= train,cpu,dicom,volumes,ray,dev
DEMO    ?= artifacts/demo
BRISC_DATA ?= ../shared/data/brisc2025
export BRISC_DATA

CHROMIUM := /usr/bin/chromium

.PHONY: install demo test bench clean

install: $(STAMP)

# Debian's Chromium, for the gallery test and benchmark in a real headless browser (no browser download of its own).
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip uninstall -q -y brisc 2>/dev/null || true  # an older checkout's install under PyPI's other "brisc"
	$(BIN)/pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $(STAMP)

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m brisc.demo --out $(DEMO)

bench: $(STAMP) $(CHROMIUM)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) artifacts/demo .pytest_cache
