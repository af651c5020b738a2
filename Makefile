# One command for every check: `make check`. Tools come from .venv when it exists
# (`python3 -m venv .venv && .venv/bin/pip install -e '.[test]'`), else from PY.
PY ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)

.PHONY: check format-check lint types imports unit test bench screenshots native

check: format-check lint types imports unit

format-check:
	$(PY) -m ruff format --check .

lint:
	$(PY) -m ruff check .

# Files, strictness and Python version live in pyproject.toml [tool.mypy].
types:
	$(PY) -m mypy

# Contracts live in pyproject.toml [tool.importlinter].
imports:
	$(PY) -c 'from importlinter.cli import lint_imports_command; lint_imports_command()'

# The fast tier, under 10 s: no gateway process, no console. Bytecode caching on even
# where the environment turns it off: pytest otherwise re-compiles every test module.
# Without the plugins only console tests use (Textual snapshots; loading them loads Textual).
unit:
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -q -m unit -p no:textual-snapshot -p no:syrupy -p no:anyio

# The whole suite, as the README runs it.
test:
	$(PY) -m pytest -q -n auto --dist loadfile

# The full benchmark, about 8 minutes (`make bench ARGS=--quick` for a short one).
bench:
	$(PY) -m tests.bench $(ARGS)

# SVGs of every console screen into screenshots/.
screenshots:
	$(PY) -m tui.screenshots

# Compile the request path again after editing it (mypyc; see README, Development).
native:
	$(PY) -m pip install -q --no-deps -e .
