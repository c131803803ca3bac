//! `svoi bench ingest`: end-to-end durable ingest on this machine — an in-process server on a
//! fresh database, a simulated fleet over loopback TCP, records per second acknowledged — and,
//! in the same run, the rate of writing the very same rows straight into a fresh database of
//! the same kind and durability (SQLite: one prepared insert per row in one transaction;
//! PostgreSQL: one binary `COPY`). Prints both and their ratio.
//!
//! With `--db postgres://.../DB` the fresh databases are scratch databases created next to DB
//! on the same server (`svoi_bench_<pid>_*`, which needs the CREATEDB privilege) and dropped
//! afterwards; DB itself is not touched.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use svoi_ingest::{Server, convert};
use svoi_store::{DbUrl, FrameFilter, RecordKind, RecordRow, Store};

/// Rounds of the plain insert; the median is reported.
const RAW_ROUNDS: usize = 3;

use crate::config::Loaded;

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// End-to-end durable ingest vs. a plain insert of the same rows.
    Ingest(IngestArgs),
}

/// Arguments of `svoi bench ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Simulated devices (one connection each).
    #[arg(long, default_value_t = 200)]
    pub devices: usize,
    /// Archive records per device. The default keeps the plain insert's single transaction
    /// within what SQLite writes efficiently on this machine class; far larger single
    /// transactions spill the page cache and slow the baseline down (measured: 400,000 rows
    /// ran at half the rate of 200,000).
    #[arg(long, default_value_t = 1_000)]
    pub records: u64,
    /// Records per `~A` message (1..=255).
    #[arg(long, default_value_t = 100)]
    pub batch: u8,
    /// Directory for the scratch SQLite databases (default: a temporary directory, removed
    /// after). Not used with PostgreSQL.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
    /// PostgreSQL only: how commits write records, `unnest` (one multi-row INSERT of column
    /// arrays, the server's way) or `copy` (COPY into a staging table, then INSERT ... SELECT),
    /// to compare the two.
    #[arg(long, value_name = "WAY", default_value = "unnest")]
    pub pg_records: svoi_store::RecordsVia,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs a benchmark.
pub fn run(cmd: &BenchCommand, loaded: &Loaded) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Ingest(a) => ingest(a, loaded),
    }
}

fn ingest(args: &IngestArgs, loaded: &Loaded) -> Result<ExitCode> {
    let tmp = tempfile::tempdir().context("cannot create a scratch directory")?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Both sides as `svoi serve` runs its store: configured durability, checkpoints off the
    // commit path.
    let (_, mut options) = crate::cmd::store_options(loaded)?;
    options.background_checkpoint = true;
    options.postgres.records_via = args.pg_records;
    let (url, _) = crate::cmd::store_options(loaded)?;
    let scratch = Scratch::new(&url, &dir, &options)?;
    let e2e_url = scratch.e2e.clone();
    let store = Store::open(&e2e_url, &options)?;
    let checkpointer = match &e2e_url {
        DbUrl::Sqlite(_) => Some(
            svoi_store::Checkpointer::open(&e2e_url, &options)?
                .spawn(Duration::from_millis(250))
                .context("cannot start the checkpointer")?,
        ),
        DbUrl::Postgres(_) => None,
    };
    let mut config = crate::cmd::serve::ingest_config(loaded);
    config.listen = "127.0.0.1:0".parse()?;
    config.max_connections = config.max_connections.max(args.devices + 16);

    // The fleet runs on a runtime of its own, as devices are other machines: sharing the
    // server's worker threads would measure the two schedulers' interplay, not the server
    // (measured: one shared runtime alternated between ~150k and ~250k records/s from run to
    // run; separate runtimes gave the standalone `svoi serve` + `svoi sim` figure every time).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let fleet = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("svoi-bench-fleet")
        .build()
        .context("cannot start the fleet's runtime")?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind(config.listen))?;
    let server = {
        let _guard = runtime.enter();
        Server::start(listener, config, store)?
    };
    let sim = svoi_sim::SimConfig {
        addr: server.local_addr(),
        devices: args.devices,
        records: args.records,
        batch: args.batch,
        reply_timeout: Duration::from_secs(60),
        ..svoi_sim::SimConfig::default()
    };
    let started = Instant::now();
    let report = fleet.block_on(svoi_sim::run(sim, None))?;
    let elapsed = started.elapsed();
    let stats = server.stats().snapshot();
    runtime.block_on(server.shutdown(Duration::from_secs(30)));
    // The final truncating checkpoint syncs the database file, so the plain inserts below do
    // not compete with the write-back of the run above.
    if let Some(c) = checkpointer {
        c.stop();
    }
    let expected = args.devices as u64 * args.records;
    if report.records_acked < expected || report.reply_mismatches > 0 {
        bail!(
            "the simulated fleet got {} of {} records acknowledged ({} reply mismatches): {:?}",
            report.records_acked,
            expected,
            report.reply_mismatches,
            report.errors
        );
    }

    // The same rows, decoded again from the archive exactly as the server stored them.
    let mut store = Store::open(&e2e_url, &options)?;
    let mut rows: std::collections::BTreeMap<String, Vec<RecordRow>> = Default::default();
    let filter = FrameFilter {
        since_us: 0,
        until_us: None,
        imei: None,
    };
    let mut after = 0;
    loop {
        let frames = store.frames_for_reprocess(&filter, after, 5_000)?;
        let Some(last) = frames.last() else { break };
        after = last.id;
        for f in frames {
            let d = convert::redecode(
                f.imei.as_deref(),
                f.device_id,
                f.layout.as_ref(),
                &f.bytes,
                loaded.config.ingest.max_message_bytes,
            );
            let Some(imei) = f.imei else { continue };
            rows.entry(imei).or_default().extend(
                d.records
                    .into_iter()
                    .filter(|r| matches!(r.kind, RecordKind::Archive | RecordKind::Alarm { .. }))
                    .map(|r| r.row),
            );
        }
    }
    drop(store);
    let total_rows: usize = rows.values().map(Vec::len).sum();
    let batches: Vec<(&str, &[RecordRow])> = rows
        .iter()
        .map(|(i, v)| (i.as_str(), v.as_slice()))
        .collect();
    // The plain insert is short and sensitive to what the disk is doing; the median of a few
    // rounds, each into a fresh database, is what is compared.
    let mut raw_runs: Vec<(u64, Duration)> = Vec::new();
    for url in &scratch.raw {
        let mut raw = Store::open(url, &options)?;
        let started = Instant::now();
        let inserted = raw.insert_records_direct_many(&batches)?;
        raw_runs.push((inserted, started.elapsed()));
    }
    raw_runs.sort_by_key(|(_, d)| *d);
    let (inserted, raw_elapsed) = raw_runs[raw_runs.len() / 2];

    let e2e_rate = report.records_acked as f64 / elapsed.as_secs_f64();
    let raw_rate = inserted as f64 / raw_elapsed.as_secs_f64();
    let ratio = e2e_rate / raw_rate;
    let (backend, baseline) = match &e2e_url {
        DbUrl::Sqlite(_) => ("sqlite", "plain insert"),
        DbUrl::Postgres(_) => ("postgres", "COPY"),
    };
    drop(scratch);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "backend": backend,
                "pg_records": format!("{:?}", args.pg_records).to_lowercase(),
                "baseline": baseline,
                "devices": args.devices,
                "records_per_device": args.records,
                "batch": args.batch,
                "synchronous": loaded.config.sqlite.synchronous,
                "records_acked": report.records_acked,
                "e2e_seconds": elapsed.as_secs_f64(),
                "e2e_records_per_sec": e2e_rate,
                "ack_latency_ms": report.ack_latency_ms,
                "commits": stats.commits,
                "frames_per_commit": stats.frames_received as f64 / stats.commits.max(1) as f64,
                "raw_rows": total_rows,
                "raw_seconds": raw_elapsed.as_secs_f64(),
                "raw_records_per_sec": raw_rate,
                "ratio": ratio,
            })
        );
    } else {
        println!(
            "end-to-end ({backend}): {} records acknowledged in {:.2} s = {:.0} records/s ({}, {} devices, {} records per ~A)",
            report.records_acked,
            elapsed.as_secs_f64(),
            e2e_rate,
            match &e2e_url {
                DbUrl::Sqlite(_) => format!("synchronous={}", loaded.config.sqlite.synchronous),
                DbUrl::Postgres(_) => "synchronous_commit=on".to_owned(),
            },
            args.devices,
            args.batch
        );
        println!(
            "  {} commits, {:.1} frames per commit, acknowledgement latency p50 {:.1} ms, p99 {:.1} ms",
            stats.commits,
            stats.frames_received as f64 / stats.commits.max(1) as f64,
            report.ack_latency_ms.p50,
            report.ack_latency_ms.p99
        );
        println!(
            "{baseline} of the same {} rows in one transaction: {:.2} s = {:.0} records/s (median of {RAW_ROUNDS})",
            inserted,
            raw_elapsed.as_secs_f64(),
            raw_rate
        );
        println!("ratio end-to-end / {baseline}: {ratio:.3}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The fresh databases of one run: SQLite files in the directory, or PostgreSQL scratch
/// databases on the configured server, dropped again when this goes out of scope.
struct Scratch {
    e2e: DbUrl,
    raw: Vec<DbUrl>,
    /// PostgreSQL: the configured URL (to drop from) and the names created.
    created: Option<(svoi_store::PgUrl, Vec<String>, svoi_store::StoreOptions)>,
}

impl Scratch {
    fn new(
        url: &DbUrl,
        dir: &std::path::Path,
        options: &svoi_store::StoreOptions,
    ) -> Result<Scratch> {
        match url {
            DbUrl::Sqlite(_) => {
                let e2e = dir.join("bench-ingest.db");
                let raw: Vec<std::path::PathBuf> = (1..=RAW_ROUNDS)
                    .map(|i| dir.join(format!("bench-insert-{i}.db")))
                    .collect();
                for path in std::iter::once(&e2e).chain(&raw) {
                    for suffix in ["", "-wal", "-shm"] {
                        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                    }
                }
                Ok(Scratch {
                    e2e: DbUrl::Sqlite(e2e),
                    raw: raw.into_iter().map(DbUrl::Sqlite).collect(),
                    created: None,
                })
            }
            DbUrl::Postgres(pg) => {
                let pid = std::process::id();
                let mut scratch = Scratch {
                    e2e: url.clone(),
                    raw: Vec::new(),
                    created: Some((pg.clone(), Vec::new(), options.clone())),
                };
                let names: Vec<String> = std::iter::once(format!("svoi_bench_{pid}_ingest"))
                    .chain((1..=RAW_ROUNDS).map(|i| format!("svoi_bench_{pid}_copy_{i}")))
                    .collect();
                for (i, name) in names.iter().enumerate() {
                    let created =
                        svoi_store::pg_create_database(pg, name, options).with_context(|| {
                            format!("cannot create the scratch database {name} on {pg}")
                        })?;
                    if let Some((_, list, _)) = &mut scratch.created {
                        list.push(name.clone());
                    }
                    if i == 0 {
                        scratch.e2e = DbUrl::Postgres(created);
                    } else {
                        scratch.raw.push(DbUrl::Postgres(created));
                    }
                }
                Ok(scratch)
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some((url, names, options)) = &self.created {
            for name in names {
                if let Err(e) = svoi_store::pg_drop_database(url, name, options) {
                    eprintln!("warning: cannot drop the scratch database {name}: {e}");
                }
            }
        }
    }
}
