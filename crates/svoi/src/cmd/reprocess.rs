//! `svoi reprocess --since T [--until T] [--imei X]`: decodes archived raw frames again with
//! this binary's decoder and dictionary, updates what they produced, and reports what changed.
//! Running it twice changes nothing the second time.

use std::process::ExitCode;

use anyhow::{Context, Result};
use svoi_ingest::convert;
use svoi_store::{FrameFilter, ReprocessStats};

use crate::config::Loaded;

/// Arguments of `svoi reprocess`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Frames received at or after this time (RFC 3339 or Unix seconds).
    #[arg(long, value_name = "TIME")]
    pub since: String,
    /// Frames received before this time (default: now).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only this device's frames.
    #[arg(long, value_name = "IMEI")]
    pub imei: Option<String>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Frames per transaction: small enough that a running server's writer never waits long for
/// the lock (its busy timeout is `sqlite.busy_timeout`).
const PAGE: usize = 200;

/// Re-decodes the window and prints the report.
pub fn run(args: &Args, loaded: &Loaded) -> Result<ExitCode> {
    let since_us = crate::timearg::parse_us(&args.since).context("--since")?;
    let until_us = match &args.until {
        Some(u) => Some(crate::timearg::parse_us(u).context("--until")?),
        None => None,
    };
    let mut store = crate::cmd::open_store(loaded)?;
    let filter = FrameFilter {
        since_us,
        until_us,
        imei: args.imei.clone(),
    };
    let max_frame = loaded.config.ingest.max_message_bytes;
    let mut total = ReprocessStats::default();
    let mut after = 0i64;
    loop {
        let frames = store.frames_for_reprocess(&filter, after, PAGE)?;
        let Some(last) = frames.last() else { break };
        after = last.id;
        let updates: Vec<(i64, svoi_store::FrameRow)> = frames
            .into_iter()
            .map(|f| {
                let d = convert::redecode(
                    f.imei.as_deref(),
                    f.device_id,
                    f.layout.as_ref(),
                    &f.bytes,
                    max_frame,
                );
                let row = d.into_frame(
                    0,
                    f.conn_id,
                    f.imei.as_deref().map(std::sync::Arc::from),
                    f.received_at_us,
                    f.bytes,
                    f.layout.map(std::sync::Arc::new),
                );
                (f.id, row)
            })
            .collect();
        let stats = store.reprocess(&updates)?;
        total.add(stats);
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "since": crate::timearg::format_us(since_us),
                "until": until_us.map(crate::timearg::format_us),
                "imei": args.imei,
                "frames": total.frames,
                "status_changed": total.status_changed,
                "records_added": total.records_added,
                "records_changed": total.records_changed,
                "records_removed": total.records_removed,
                "records_unchanged": total.records_unchanged,
                "duplicates": total.duplicates,
            })
        );
    } else {
        println!(
            "reprocessed {} frames: {} changed status; records {} added, {} changed, {} removed, {} unchanged ({} already stored by other frames)",
            total.frames,
            total.status_changed,
            total.records_added,
            total.records_changed,
            total.records_removed,
            total.records_unchanged,
            total.duplicates
        );
    }
    Ok(ExitCode::SUCCESS)
}
