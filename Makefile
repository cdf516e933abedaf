# Two commands: `make run` and `make test` (see README.md).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-slow lint docs bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[cli]"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[cli,test,docs]"
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/python -m jaxdiffeq solve lorenz --plot lorenz.png

lint: $(VENV)/.installed-test
	$(BIN)/ruff check jaxdiffeq tests bench examples tools
	$(BIN)/ruff format --check jaxdiffeq tests bench examples tools
	$(BIN)/pyright jaxdiffeq examples tests/test_typed_user_code.py

# The documentation site (site/index.html): the README, the guides in docs/ and
# the API reference from the docstrings. --strict: a warning (broken link,
# unresolved reference) is an error. (Not --quiet: it hides the warnings from
# --strict, which then passes.)
docs: $(VENV)/.installed-test
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# -n auto: one pytest-xdist worker per core. The compiled programs are cached in
# ~/.cache/jaxdiffeq-tests (see tests/conftest.py), so later runs compile less.
test: lint docs
	$(BIN)/python -m pytest -m "not slow" -n auto

test-slow: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m slow -n auto

bench: $(VENV)/.installed-test
	$(BIN)/python bench/forward.py

clean:
	rm -rf $(VENV) build dist site *.egg-info
