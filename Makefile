# The two commands a new machine needs: `make demo` and `make test`.
.PHONY: setup demo test unit integration lint bench clean

PY := .venv/bin/python

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m tortie.demo

test: setup
	$(PY) -m ruff check tortie tests bench
	$(PY) -m pytest -q -p no:cacheprovider tests

unit: setup
	$(PY) -m pytest -q tests/unit

lint: setup
	$(PY) -m ruff check tortie tests bench

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
