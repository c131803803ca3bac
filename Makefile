# Every target calls cargo, svoi or systemd; `make help` lists them.
.DEFAULT_GOAL := help
SVOI := cargo run --release --quiet -p svoi --
FUZZ_SECONDS ?= 60

# Operations: with the systemd unit installed (deploy/systemd) the targets drive systemctl and
# read /etc/svoi/svoi.toml; otherwise `svoi service` runs the server in the background with a
# pid file and a log file under data/.
SYSTEMD := $(shell systemctl cat svoi.service >/dev/null 2>&1 && echo yes)
ifeq ($(SYSTEMD),yes)
CONFIG ?= /etc/svoi/svoi.toml
LOG_FILE ?= /var/log/svoi/svoi.log
OPS := $(SVOI) --config $(CONFIG)
else
LOG_FILE ?= data/svoi.log
OPS := $(SVOI) --log-file $(LOG_FILE)
endif
API ?= http://127.0.0.1:8080

.PHONY: help build run start stop restart status logs sim test test-client test-api lint fmt \
	bench bench-ingest perf-check fuzz decode fields config-check reprocess token api-contract \
	smoke-test health-check monitor metrics alerts alerts-test runbook-no-frames \
	runbook-queue-spike runbook-decode-errors runbook-db-slow runbook-api-5xx \
	emergency-restart emergency-logs emergency-status incident daily-ops weekly-ops monthly-ops \
	quarterly-ops security-check maintenance maintenance-end maintenance-status maintenance-log \
	backup backup-list backup-prune restore retention db-optimize db-stats report db-migrate ci \
	clean

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-22s %s\n", $$1, $$2}'


build: ## Build the svoi binary (release)
	cargo build --release -p svoi

run: ## Run the server in the foreground (default sqlite:./data/svoi.db, port 5221)
	$(SVOI) serve

sim: ## Simulated fleet against a local server: make sim DEVICES=100 RECORDS=1000
	$(SVOI) sim --devices $(or $(DEVICES),100) --records $(or $(RECORDS),1000)

test: ## Run the whole test suite (README's test command)
	cargo test --workspace

test-client: ## Simulated devices against the running server: make test-client DEVICES=10 RECORDS=100
	$(SVOI) sim --devices $(or $(DEVICES),10) --records $(or $(RECORDS),100)

test-api: ## The API's tests (router, endpoints, tokens) and the end-to-end API tests
	cargo test -p svoi-api
	cargo test -p svoi --test api

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

start: ## Start the server (systemd unit if installed, else background process with data/svoi.pid)
ifeq ($(SYSTEMD),yes)
	systemctl start svoi
else
	cargo build --release --quiet -p svoi
	$(OPS) service start
endif

stop: ## Stop the server (SIGTERM, drains in-flight commits; SIGKILL after the grace period)
ifeq ($(SYSTEMD),yes)
	systemctl stop svoi
else
	$(OPS) service stop
endif

restart: ## Stop, then start the server
ifeq ($(SYSTEMD),yes)
	systemctl restart svoi
else
	cargo build --release --quiet -p svoi
	$(OPS) service restart
endif

status: ## Is the server running (process, pid, uptime)
ifeq ($(SYSTEMD),yes)
	systemctl status svoi --no-pager
else
	$(OPS) service status
endif

logs: ## Follow the server log
	tail -n 100 -F $(LOG_FILE)

smoke-test: ## End-to-end smoke test of the running server (svoi smoke; token from SVOI_TOKEN or a temporary one)
	$(OPS) smoke

health-check: ## Quick health check of the running server (svoi health)
	$(OPS) health

monitor: ## The emergency status screen, refreshed every 5 s (Ctrl-C to leave)
	while true; do clear; $(OPS) emergency status; sleep 5; done

metrics: ## Print the server's Prometheus metrics (svoi_* only)
	curl -fsS $(API)/metrics | grep '^svoi_'

alerts: ## Evaluate the alert rules against the running server (svoi alerts check)
	$(OPS) alerts check

alerts-test: ## promtool checks and unit tests of the alert rules, Prometheus config, dashboard
	./.ci/ops-check

runbook-no-frames: ## Runbook: no frames / server down
	$(SVOI) runbook show 01-no-frames

runbook-queue-spike: ## Runbook: writer queue spike
	$(SVOI) runbook show 02-queue-spike

runbook-decode-errors: ## Runbook: decode errors spike
	$(SVOI) runbook show 03-decode-errors-spike

runbook-db-slow: ## Runbook: slow database (also disk, CPU, memory)
	$(SVOI) runbook show 04-db-slow

runbook-api-5xx: ## Runbook: API 5xx spike
	$(SVOI) runbook show 05-api-5xx-spike

emergency-restart: ## Stop (SIGKILL after the grace), start, wait until ready, health check
	-$(MAKE) --no-print-directory stop
	$(MAKE) --no-print-directory start
	for i in $$(seq 60); do $(OPS) health >/dev/null 2>&1 && break; sleep 1; done
	$(OPS) health

emergency-logs: ## Write a diagnostics bundle (logs, status, redacted config, metrics) as tar.gz
	$(OPS) emergency logs

emergency-status: ## Process, uptime, connections, queue, last frame, database, disk, errors
	$(OPS) emergency status

incident: ## Open an incident file: make incident TITLE="No frames from region 3"
	$(OPS) incident new --title "$(TITLE)"

daily-ops: ## Daily procedure: health, resources, log errors, firing alerts, backup freshness
	$(OPS) maintenance run daily

weekly-ops: ## Weekly procedure: log cleanup, backup pruning, database optimisation, index stats
	$(OPS) maintenance run weekly

monthly-ops: ## Monthly procedure: restore test of the latest backup, performance, slow queries
	$(OPS) maintenance run monthly

quarterly-ops: ## Quarterly procedure: capacity planning (growth, days until the disk is full)
	$(OPS) maintenance run quarterly

security-check: ## Tokens in use, refused credentials, listen addresses
	$(OPS) token list
	curl -fsS $(API)/metrics | grep '^svoi_api_auth_failures_total' || echo "no refused credentials since start"
	$(OPS) config check | grep -E '^(api|ingest)\.listen|^api\.metrics_listen'

perf-check: ## Live latency figures, then the ingest benchmark on scratch databases
	curl -fsS $(API)/metrics | grep -E '^svoi_(ack_latency|commit_duration)_seconds_(sum|count)'
	$(SVOI) bench ingest

backup: ## Back up the database and verify the backup: make backup [LABEL=before-upgrade]
	$(OPS) backup create $(if $(LABEL),--label "$(LABEL)")
	$(OPS) backup verify latest

backup-list: ## List the backups, newest first
	$(OPS) backup list

backup-prune: ## Delete backups older than backup.keep_days, keeping the newest backup.keep_last
	$(OPS) backup prune

restore: ## Restore a backup (stop the server first): make restore ID=<id>|latest [FORCE=1]
	@test -n "$(ID)" || { $(OPS) backup list; echo "make restore needs ID=<backup id> or ID=latest" >&2; exit 2; }
	$(OPS) backup restore "$(ID)" $(if $(FORCE),--force)

maintenance: ## Open a maintenance window: make maintenance REASON="upgrade to 0.8" [DURATION=2h]
	@test -n "$(REASON)" || { echo 'make maintenance needs REASON="why"' >&2; exit 2; }
	$(OPS) maintenance start --reason "$(REASON)" $(if $(DURATION),--duration "$(DURATION)")

maintenance-end: ## Close the window: post-check (smoke), automatic rollback when it fails
	$(OPS) maintenance end

maintenance-status: ## Show the open maintenance window
	$(OPS) maintenance status

maintenance-log: ## Print the maintenance log
	$(OPS) maintenance log

retention: ## Delete data and logs older than retention.* (make retention DRY_RUN=1 to preview)
	$(OPS) retention run $(if $(DRY_RUN),--dry-run)

db-optimize: ## SQLite optimize + integrity check + incremental vacuum; PostgreSQL VACUUM ANALYZE
	$(OPS) db optimize

db-stats: ## Table and index sizes, index usage, slow queries
	$(OPS) db stats

report: ## Operations report: make report PERIOD=weekly|monthly|quarterly FORMAT=md|html|json
	$(OPS) report $(or $(PERIOD),weekly) --format $(or $(FORMAT),md) $(if $(OUTPUT),--output "$(OUTPUT)")

db-migrate: ## Apply pending schema migrations to the configured database
	$(OPS) db migrate

ci: ## Run what CI runs (.ci/run)
	./.ci/run

clean: ## Remove build artefacts
	cargo clean
