# The README documents these targets. Each one sets itself up first.
.PHONY: setup test lint docs types sanity units pytest ecosystem hostile bench demo release clean

setup:
	scripts/setup.sh

test: setup
	scripts/test.sh

lint docs types sanity units pytest ecosystem hostile: setup
	scripts/test.sh $@

bench: setup
	scripts/bench.sh

demo: setup
	scripts/demo.sh

# make release VERSION=X.Y.Z
release: setup
	scripts/release.sh $(VERSION)

clean:
	rm -rf .venv .cache dist docs/build .ansible collections tests/output .pytest_cache .mypy_cache
