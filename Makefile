# ka-exporter: the two commands (see README) and a few helpers.
#   make demo   set everything up, run a real keepalived pair in namespaces, watch it with ka-exporter
#   make test   install what the tests need and run lint, types and the whole test suite
.PHONY: demo test lint bench soak clean

VENV := .venv
BIN := $(VENV)/bin

demo:
	@scripts/bootstrap.sh
	@$(BIN)/ka-exporter demo

test:
	@scripts/bootstrap.sh --test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict ka_exporter
	$(BIN)/python -m pytest -q

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict ka_exporter

bench:
	@scripts/bootstrap.sh
	$(BIN)/python -m bench

soak:
	@scripts/bootstrap.sh
	$(BIN)/python -m bench.soak

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
