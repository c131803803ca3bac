# Every target calls cargo or svoi; `make help` lists them.
.DEFAULT_GOAL := help
SVOI := cargo run --release --quiet -p svoi --
FUZZ_SECONDS ?= 60

.PHONY: help build test lint fmt bench fuzz decode fields ci clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

build: ## Build the svoi binary (release)
	cargo build --release -p svoi

test: ## Run the whole test suite (README's test command)
	cargo test --workspace

lint: ## Check formatting and clippy, warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt --all

bench: ## Criterion benchmark of decode throughput (MB/s, records/s)
	cargo bench -p svoi-proto --bench decode

fuzz: ## Fuzz the framer and decoder for FUZZ_SECONDS (needs nightly + cargo-fuzz)
	cargo +nightly fuzz run decode -- -max_total_time=$(FUZZ_SECONDS)

decode: ## Decode a capture: make decode FILE=capture.bin (HEX=1 for hex text)
	$(SVOI) decode $(if $(HEX),--hex) $(FILE)

fields: ## Print the FLEX field dictionary
	$(SVOI) fields

ci: ## Run what CI runs (.ci/run)
	./.ci/run

clean: ## Remove build artefacts
	cargo clean
