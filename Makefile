# The README documents these targets. Each one sets itself up first.
.PHONY: setup test lint docs types sanity units pytest bench demo clean

setup:
	scripts/setup.sh

test: setup
	scripts/test.sh

lint docs types sanity units pytest: setup
	scripts/test.sh $@

bench: setup
	scripts/bench.sh

demo: setup
	scripts/demo.sh

clean:
	rm -rf .venv .cache .ansible collections tests/output .pytest_cache .mypy_cache
