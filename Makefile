# The README documents these targets. Each one sets itself up first.
.PHONY: setup test test-long powercut lint docs types sanity units pytest host vm ecosystem hostile bench demo release clean

setup:
	scripts/setup.sh

test: setup
	scripts/test.sh

# The scenarios beyond make test's 60-minute budget (the README lists them with their times).
test-long: setup
	scripts/test.sh long

# Power cuts inside lab VMs at every step boundary of the operations that rewrite the root (README: its time).
powercut: setup
	scripts/test.sh powercut

lint docs types sanity units pytest host vm ecosystem hostile: setup
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
