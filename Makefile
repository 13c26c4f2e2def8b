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
	@# Two phases: most tests on two workers (a file's tests stay on one worker), then the CPU-heavy and
	@# host-wide ones (marked serial) alone. Both always run; the target fails if either failed.
	@a=0; b=0; \
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not serial" || a=$$?; \
	$(BIN)/python -m pytest -q -p no:xdist -m serial || b=$$?; \
	echo "make test: parallel phase exit $$a, serial phase exit $$b"; \
	[ $$a -eq 0 ] && [ $$b -eq 0 ]

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
