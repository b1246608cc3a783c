# semantic-router: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test tools crds check-crds lint bench

## The whole local stack (no cluster needed): three simulated model servers, the router on
## config/samples and Envoy on 127.0.0.1:8801; prints curl commands to try. Ctrl-C stops it.
run:
	CARGO="$(CARGO)" bash hack/run-local.sh

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

## Data-plane benchmark through real Envoy (prints numbers; see benches/hop.rs).
bench:
	$(CARGO) build --release --bin semantic-router
	$(CARGO) bench --bench hop
