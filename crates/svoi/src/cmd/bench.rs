//! `svoi bench ingest`: end-to-end durable ingest on this machine — an in-process server on a
//! fresh database, a simulated fleet over loopback TCP, records per second acknowledged — and,
//! in the same run, the rate of inserting the very same rows straight into a fresh database of
//! the same kind and durability. Prints both and their ratio.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use svoi_ingest::{Server, convert};
use svoi_store::{DbUrl, FrameFilter, RecordKind, RecordRow, Store, StoreOptions};

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
    /// Directory for the two scratch databases (default: a temporary directory, removed after).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
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
    let options = StoreOptions {
        synchronous: loaded.config.sqlite.synchronous.parse()?,
        busy_timeout: loaded.config.sqlite.busy_timeout,
    };
    let e2e_url = DbUrl::Sqlite(dir.join("bench-ingest.db"));
    let raw_url = DbUrl::Sqlite(dir.join("bench-insert.db"));
    for p in [&e2e_url, &raw_url] {
        let DbUrl::Sqlite(path) = p;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
    let store = Store::open(&e2e_url, &options)?;
    let mut config = crate::cmd::serve::ingest_config(loaded);
    config.listen = "127.0.0.1:0".parse()?;
    config.max_connections = config.max_connections.max(args.devices + 16);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (report, elapsed) = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let server = Server::start(listener, config, store)?;
        let sim = svoi_sim::SimConfig {
            addr: server.local_addr(),
            devices: args.devices,
            records: args.records,
            batch: args.batch,
            reply_timeout: Duration::from_secs(60),
            ..svoi_sim::SimConfig::default()
        };
        let started = Instant::now();
        let report = svoi_sim::run(sim, None).await?;
        let elapsed = started.elapsed();
        let (_, _) = server.shutdown(Duration::from_secs(30)).await;
        anyhow::Ok((report, elapsed))
    })?;
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
    let store = Store::open(&e2e_url, &options)?;
    let mut rows: Vec<(String, Vec<RecordRow>)> = Vec::new();
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
            let recs: Vec<RecordRow> = d
                .records
                .into_iter()
                .filter(|r| matches!(r.kind, RecordKind::Archive | RecordKind::Alarm { .. }))
                .map(|r| r.row)
                .collect();
            if recs.is_empty() {
                continue;
            }
            match rows.last_mut() {
                Some((i, v)) if *i == imei => v.extend(recs),
                _ => rows.push((imei, recs)),
            }
        }
    }
    drop(store);
    let total_rows: usize = rows.iter().map(|(_, v)| v.len()).sum();
    let grouped: Vec<(Arc<str>, Vec<RecordRow>)> = rows
        .into_iter()
        .map(|(i, v)| (Arc::from(i.as_str()), v))
        .collect();
    let mut raw = Store::open(&raw_url, &options)?;
    let started = Instant::now();
    let batches: Vec<(&str, &[RecordRow])> =
        grouped.iter().map(|(i, v)| (&**i, v.as_slice())).collect();
    let inserted = raw.insert_records_direct_many(&batches)?;
    let raw_elapsed = started.elapsed();

    let e2e_rate = report.records_acked as f64 / elapsed.as_secs_f64();
    let raw_rate = inserted as f64 / raw_elapsed.as_secs_f64();
    let ratio = e2e_rate / raw_rate;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "devices": args.devices,
                "records_per_device": args.records,
                "batch": args.batch,
                "synchronous": loaded.config.sqlite.synchronous,
                "records_acked": report.records_acked,
                "e2e_seconds": elapsed.as_secs_f64(),
                "e2e_records_per_sec": e2e_rate,
                "ack_latency_ms": report.ack_latency_ms,
                "raw_rows": total_rows,
                "raw_seconds": raw_elapsed.as_secs_f64(),
                "raw_records_per_sec": raw_rate,
                "ratio": ratio,
            })
        );
    } else {
        println!(
            "end-to-end: {} records acknowledged in {:.2} s = {:.0} records/s (synchronous={}, {} devices, {} records per ~A)",
            report.records_acked,
            elapsed.as_secs_f64(),
            e2e_rate,
            loaded.config.sqlite.synchronous,
            args.devices,
            args.batch
        );
        println!(
            "plain insert of the same {} rows: {:.2} s = {:.0} records/s",
            inserted,
            raw_elapsed.as_secs_f64(),
            raw_rate
        );
        println!("ratio end-to-end / plain insert: {ratio:.3}");
    }
    Ok(ExitCode::SUCCESS)
}
