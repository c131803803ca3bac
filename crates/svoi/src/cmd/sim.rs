//! `svoi sim`: runs a simulated fleet of trackers against a server's device port (tests,
//! demos, smoke tests, benchmarks) and prints what it saw: records sent and acknowledged,
//! throughput, acknowledgement-latency percentiles. Exit code 0 when every device got all its
//! records acknowledged with byte-exact replies, 1 otherwise, 2 on usage or I/O errors.
//!
//! `--acked-log FILE` appends `<imei> <record_index> <event_time> <latitude> <longitude>`
//! (degrees, `-` for a record without a valid fix) for every acknowledged record and hands the lines to the operating system at least every 100 ms, so a crash test
//! that kills the server can check afterwards that each acknowledged record was stored.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use svoi_sim::{Ack, SimConfig, SimReport};
use tokio::sync::mpsc;

/// Lines of the acknowledged-records log go to the file at least this often.
const ACK_FLUSH_EVERY: Duration = Duration::from_millis(50);
/// ... or as soon as this many bytes are waiting.
const ACK_FLUSH_BYTES: usize = 64 * 1024;
/// Capacity of the channel from the devices to the log writer.
const ACK_CHANNEL: usize = 4096;

/// Arguments of `svoi sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The server's device port.
    #[arg(long, default_value = "127.0.0.1:5221")]
    addr: SocketAddr,
    /// Number of devices, each with its own connection.
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// Records each device must get acknowledged.
    #[arg(long, default_value_t = 100)]
    records: u64,
    /// Records per ~A message (1..=255).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(1..))]
    batch: u8,
    /// Ceiling on records per second per device (default: as fast as acknowledgements come).
    #[arg(long, value_name = "R")]
    rate: Option<f64>,
    /// Send the record after every K archive records as a ~T out-of-turn record.
    #[arg(long, value_name = "K")]
    alarm_every: Option<u64>,
    /// Send a ~C current-state record after every K acknowledged records.
    #[arg(long, value_name = "K")]
    current_every: Option<u64>,
    /// Stop after this long ("30s", "2m").
    #[arg(long, value_name = "D", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// A reply later than this means the connection is broken: reconnect and resend.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = humantime::parse_duration)]
    reply_timeout: Duration,
    /// After a failure, keep reconnecting this long before a device gives up.
    #[arg(long, value_name = "D", default_value = "10s", value_parser = humantime::parse_duration)]
    reconnect_for: Duration,
    /// IMEI of device 0; device i has imei-base + i.
    #[arg(long, value_name = "N", default_value_t = svoi_sim::DEFAULT_IMEI_BASE)]
    imei_base: u64,
    /// Seed of the devices' field sets and values.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Event time of record 0 (Unix seconds); record k has start-time + k.
    #[arg(long, value_name = "UNIX_S", default_value_t = svoi_sim::DEFAULT_START_TIME)]
    start_time: u32,
    /// FLEX versions spread over the devices (10 = 1.0, 20 = 2.0, 30 = 3.0).
    #[arg(long, value_name = "V,...", value_delimiter = ',', default_values_t = [10u8, 20, 30])]
    flex_versions: Vec<u8>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Append "<imei> <record_index> <event_time> <latitude> <longitude>" for every
    /// acknowledged record to FILE (coordinates in degrees, `-` for a record without a fix).
    #[arg(long, value_name = "FILE")]
    acked_log: Option<PathBuf>,
}

impl Args {
    fn config(&self) -> SimConfig {
        SimConfig {
            addr: self.addr,
            devices: self.devices,
            records: self.records,
            batch: self.batch,
            rate: self.rate,
            alarm_every: self.alarm_every,
            current_every: self.current_every,
            duration: self.duration,
            reply_timeout: self.reply_timeout,
            reconnect_for: self.reconnect_for,
            imei_base: self.imei_base,
            seed: self.seed,
            start_time: self.start_time,
            flex_versions: self.flex_versions.clone(),
        }
    }
}

/// Runs the simulation and prints its report.
pub fn run(args: &Args) -> Result<ExitCode> {
    let cfg = args.config();
    cfg.validate()?;
    // One socket per device: lift a low soft limit on open files (often 1024) towards the hard
    // one; a fleet larger than the hard limit reports its connection errors as usual.
    let _ = rlimit::increase_nofile_limit(cfg.devices as u64 + 64);
    let log = match &args.acked_log {
        Some(path) => Some((
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?,
            path.as_path(),
        )),
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (report, logged) = runtime.block_on(simulate(cfg, log))?;

    let mut out = io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_summary(&mut out, &report)?;
    }
    out.flush()?;
    logged?;
    let problems = report.problems();
    if problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for p in problems {
        eprintln!("svoi sim: {p}");
    }
    Ok(ExitCode::from(1))
}

/// Runs the fleet until it is done, the duration passes or Ctrl-C; the second result is the
/// acknowledged-records log's outcome.
async fn simulate(cfg: SimConfig, log: Option<(File, &Path)>) -> Result<(SimReport, Result<()>)> {
    let ctrl_c = async {
        // Without a signal handler the run just cannot be interrupted early.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let Some((file, path)) = log else {
        let report = svoi_sim::run_until(cfg, None, ctrl_c).await?;
        return Ok((report, Ok(())));
    };
    let (tx, rx) = mpsc::channel(ACK_CHANNEL);
    let writer = tokio::spawn(write_acks(Arc::new(file), rx));
    let report = svoi_sim::run_until(cfg, Some(tx), ctrl_c).await?;
    let logged = match writer.await {
        Ok(r) => r.with_context(|| format!("cannot write {}", path.display())),
        Err(e) => Err(anyhow::anyhow!(
            "the acknowledged-records writer failed: {e}"
        )),
    };
    Ok((report, logged))
}

/// Appends one line per acknowledged record, handing the lines to the file at least every
/// [`ACK_FLUSH_EVERY`]. After a write error it keeps draining the channel (the devices must
/// not stall on it) and reports the first error at the end.
async fn write_acks(file: Arc<File>, mut acks: mpsc::Receiver<Ack>) -> io::Result<()> {
    let mut pending = Vec::with_capacity(ACK_FLUSH_BYTES);
    let mut failed: Option<io::Error> = None;
    let mut tick = tokio::time::interval(ACK_FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let flush = tokio::select! {
            ack = acks.recv() => match ack {
                Some(a) => {
                    if failed.is_none() {
                        let line = match a.position {
                            Some((lat, lon)) => format!(
                                "{} {} {} {:.6} {:.6}\n",
                                a.imei,
                                a.record_index,
                                a.event_time,
                                f64::from(lat) / 600_000.0,
                                f64::from(lon) / 600_000.0
                            ),
                            None => format!("{} {} {} - -\n", a.imei, a.record_index, a.event_time),
                        };
                        pending.extend_from_slice(line.as_bytes());
                    }
                    pending.len() >= ACK_FLUSH_BYTES
                }
                None => break,
            },
            _ = tick.tick() => !pending.is_empty(),
        };
        if flush && failed.is_none() {
            match append(&file, pending).await {
                Ok(buf) => pending = buf,
                Err(e) => {
                    failed = Some(e);
                    pending = Vec::new();
                }
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if !pending.is_empty() {
        append(&file, pending).await?;
    }
    Ok(())
}

/// Writes `buf` to the file on a blocking thread; returns it emptied for reuse.
async fn append(file: &Arc<File>, mut buf: Vec<u8>) -> io::Result<Vec<u8>> {
    let file = Arc::clone(file);
    tokio::task::spawn_blocking(move || {
        (&*file).write_all(&buf)?;
        buf.clear();
        Ok(buf)
    })
    .await
    .map_err(io::Error::other)?
}

fn print_summary(out: &mut impl Write, r: &SimReport) -> io::Result<()> {
    let l = r.ack_latency_ms;
    writeln!(
        out,
        "devices      {} ({} completed)",
        r.devices, r.devices_completed
    )?;
    writeln!(
        out,
        "records      {} acknowledged of {}; {} sent, {} resent",
        r.records_acked,
        r.records_per_device * r.devices as u64,
        r.records_sent,
        r.records_resent
    )?;
    writeln!(out, "alarms       {} acknowledged (~T)", r.alarms_acked)?;
    writeln!(out, "currents     {} acknowledged (~C)", r.currents_acked)?;
    writeln!(out, "reconnects   {}", r.reconnects)?;
    writeln!(out, "mismatches   {}", r.reply_mismatches)?;
    writeln!(
        out,
        "elapsed      {:.3} s{}",
        r.elapsed.as_secs_f64(),
        if r.stopped_early {
            " (stopped early)"
        } else {
            ""
        }
    )?;
    writeln!(out, "throughput   {:.1} records/s", r.acked_per_sec)?;
    writeln!(
        out,
        "ack latency  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        l.p50, l.p90, l.p99, l.max
    )?;
    if !r.errors.is_empty() {
        writeln!(out, "errors (first {} distinct):", r.errors.len())?;
        for e in &r.errors {
            writeln!(out, "  {e}")?;
        }
    }
    Ok(())
}
