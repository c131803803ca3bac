# Every target calls cargo or svoi; `make help` lists them.
.DEFAULT_GOAL := help
SVOI := cargo run --release --quiet -p svoi --
FUZZ_SECONDS ?= 60

.PHONY: help build run sim test lint fmt bench bench-ingest fuzz decode fields config-check reprocess token api-contract ci clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

build: ## Build the svoi binary (release)
	cargo build --release -p svoi

run: ## Run the server on the configured database (default sqlite:./data/svoi.db, port 5221)
	$(SVOI) serve

sim: ## Simulated fleet against a local server: make sim DEVICES=100 RECORDS=1000
	$(SVOI) sim --devices $(or $(DEVICES),100) --records $(or $(RECORDS),1000)

test: ## Run the whole test suite (README's test command)
	cargo test --workspace

lint: ## Check formatting and clippy, warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt --all

bench: ## Criterion benchmarks: decode throughput and store batch inserts
	cargo bench -p svoi-proto --bench decode
	cargo bench -p svoi-store --bench insert

bench-ingest: ## End-to-end durable ingest vs. plain insert / COPY of the same rows (DB=postgres://... for PostgreSQL)
	$(SVOI) $(if $(DB),--db $(DB)) bench ingest

fuzz: ## Fuzz the framer and decoder for FUZZ_SECONDS (needs nightly + cargo-fuzz)
	cargo +nightly fuzz run decode -- -max_total_time=$(FUZZ_SECONDS)

decode: ## Decode a capture: make decode FILE=capture.bin (HEX=1 for hex text)
	$(SVOI) decode $(if $(HEX),--hex) $(FILE)

fields: ## Print the FLEX field dictionary
	$(SVOI) fields

config-check: ## Print the effective configuration and where each value came from
	$(SVOI) config check

reprocess: ## Re-decode archived frames: make reprocess SINCE=2026-11-01 [IMEI=...]
	$(SVOI) reprocess --since $(SINCE) $(if $(IMEI),--imei $(IMEI))

token: ## Create an API token: make token NAME=grafana [SCOPE=admin]
	$(SVOI) token create --name $(NAME) --scope $(or $(SCOPE),read)

api-contract: ## promtool and schemathesis against a running server (CONTRACT_DB=postgres://... for PostgreSQL)
	$(if $(CONTRACT_DB),CONTRACT_DB=$(CONTRACT_DB) )./.ci/api-contract

ci: ## Run what CI runs (.ci/run)
	./.ci/run

clean: ## Remove build artefacts
	cargo clean
