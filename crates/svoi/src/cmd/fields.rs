//! `svoi fields [--json]`: the FLEX field dictionary as the decoder uses it, so an operator can
//! look up what a field number in `svoi decode` output means.

use std::io::{self, BufWriter, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::json;
use svoi_proto::dictionary::{FIELDS, NoData, NoDataOn};

/// Arguments of `svoi fields`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// One JSON object per field instead of a table.
    #[arg(long)]
    json: bool,
}

fn no_data(rule: NoData, on: NoDataOn) -> String {
    let what = match rule {
        NoData::None => return String::new(),
        NoData::Equals(x) => format!("={x}"),
        NoData::AtLeast(x) => format!(">={x}"),
        NoData::Negative => "<0".to_string(),
    };
    match on {
        NoDataOn::All => what,
        NoDataOn::Only(i) => format!("[{i}]{what}"),
    }
}

/// Prints the dictionary.
pub fn run(args: &Args) -> Result<ExitCode> {
    let mut out = BufWriter::new(io::stdout().lock());
    for d in FIELDS.iter() {
        let wire: Vec<&str> = d.wire.iter().map(|s| s.name()).collect();
        if args.json {
            let line = json!({
                "number": d.number, "name": d.name, "size": d.size, "wire": wire,
                "unit": d.unit, "scale": d.scale, "no_data": no_data(d.no_data, d.no_data_on),
                "since": match d.since {
                    svoi_proto::dictionary::Since::V1 => "1.0",
                    svoi_proto::dictionary::Since::V2 => "2.0",
                    svoi_proto::dictionary::Since::V3 => "3.0",
                },
                "description": d.description,
            });
            writeln!(out, "{line}")
        } else {
            writeln!(
                out,
                "{:>3}  {:<28} {:>2}  {:<10} {:<6} {:<12} {:<14} {}",
                d.number,
                d.name,
                d.size,
                if wire.len() == 1 {
                    wire[0].to_string()
                } else {
                    format!("{}x", wire.len())
                },
                d.unit,
                if d.scale.abs() < 1e-3 {
                    format!("{:.4e}", d.scale)
                } else {
                    d.scale.to_string()
                },
                no_data(d.no_data, d.no_data_on),
                d.description
            )
        }
        .context("cannot write to standard output")?;
    }
    out.flush().context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}
