# The two commands of the README: `make demo` and `make test`.
.PHONY: demo test setup setup-test lint bench

demo: setup
	.venv/bin/siyu demo

test: setup-test
	bash scripts/test.sh

setup:
	bash scripts/setup.sh

setup-test:
	bash scripts/setup.sh --test

lint: setup
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/mypy src

bench: setup
	.venv/bin/python benchmarks/customers_list.py
