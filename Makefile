# semantic-router: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test tools crds check-crds lint

## Run the router on the sample policy in config/samples (no cluster needed).
run:
	$(CARGO) run --bin semantic-router -- run --manifests config/samples

## Everything CI runs: install the test tools, then format, lint and all tests.
test: tools lint
	$(CARGO) test

## Install what the tests need into ignored folders (.venv, .tools).
tools:
	bash hack/install-tools.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

## Regenerate crds/ from the Rust types (a test fails when they drift).
crds:
	$(CARGO) run -q --bin semantic-router -- crds > crds/semantic-router.yaml
