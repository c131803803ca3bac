//! `svoi config check [--json]`: loads the configuration exactly as the server will and prints
//! every effective value with where it came from. Exit 0 when the configuration is valid, 2
//! when it is not, so deploy scripts can gate a restart on it.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::{Context, Result};
use serde_json::{Map, Value as Json, json};

use crate::config::{self, Loaded};

/// `svoi config` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print each effective value and its source.
    ///
    /// Layers: defaults < file (`--config`/`SVOI_CONFIG`) < `SVOI_*` environment < flags.
    /// Exit code 0 when valid, 2 when not.
    Check(CheckArgs),
}

/// Arguments of `svoi config check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Print one JSON object (`valid`, `config`, `sources`; `error` when invalid).
    #[arg(long)]
    json: bool,
}

/// Runs a `config` subcommand on the result of loading the configuration.
pub fn run(cmd: &ConfigCommand, loaded: Result<Loaded>) -> Result<ExitCode> {
    match cmd {
        ConfigCommand::Check(args) => check(args, loaded),
    }
}

fn check(args: &CheckArgs, loaded: Result<Loaded>) -> Result<ExitCode> {
    let mut out = io::stdout().lock();
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("svoi: {e:#}");
            if args.json {
                let line = json!({ "valid": false, "error": format!("{e:#}") });
                writeln!(out, "{line}").context("cannot write to standard output")?;
            }
            return Ok(ExitCode::from(2));
        }
    };
    for warning in &loaded.warnings {
        eprintln!("svoi: warning: {warning}");
    }
    if args.json {
        writeln!(out, "{}", to_json(&loaded))
    } else {
        write!(out, "{}", loaded.render())
    }
    .context("cannot write to standard output")?;
    out.flush().context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// `{"valid":true,"config":{key: value},"sources":{key: "default"|"file:PATH:LINE"|...}}`;
/// integer keys are JSON numbers, everything else strings (secrets `"***"`).
fn to_json(loaded: &Loaded) -> Json {
    let mut values = Map::new();
    let mut sources = Map::new();
    for (key, value, source) in &loaded.sources {
        let number = config::is_integer_key(key)
            .then(|| value.parse::<u64>().ok())
            .flatten();
        let value = number.map_or_else(|| Json::from(value.as_str()), Json::from);
        values.insert((*key).to_string(), value);
        sources.insert((*key).to_string(), Json::from(source.to_string()));
    }
    json!({ "valid": true, "config": values, "sources": sources })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn json_has_numbers_for_integer_keys_and_source_strings() {
        let env = vec![("SVOI_INGEST_QUEUE_CAPACITY".to_string(), "9".to_string())];
        let loaded = config::load(None, &env, &config::Overrides::default()).unwrap();
        let j = to_json(&loaded);
        assert_eq!(j["valid"], true);
        assert_eq!(
            j["config"]["ingest"],
            Json::Null,
            "keys are flat dotted names"
        );
        assert_eq!(j["config"]["ingest.queue_capacity"], 9);
        assert_eq!(j["config"]["ingest.listen"], "0.0.0.0:5221");
        assert_eq!(
            j["sources"]["ingest.queue_capacity"],
            "env:SVOI_INGEST_QUEUE_CAPACITY"
        );
        assert_eq!(j["sources"]["db"], "default");
        let keys: Vec<&String> = j["config"].as_object().unwrap().keys().collect();
        assert_eq!(keys.first().map(|k| k.as_str()), Some("db"), "table order");
        assert_eq!(keys.len(), loaded.sources.len());
    }
}
