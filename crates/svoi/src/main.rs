//! The `svoi` binary: command-line parsing and exit codes. Each subcommand lives in its own
//! module under `cmd/`; the libraries never exit the process or print.
//!
//! Exit codes are part of the interface that scripts, cron and monitoring rely on: 0 success,
//! 1 a check or decode found a problem, 2 usage or I/O error.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Self-hosted receiver for Navtelecom NTCB/FLEX GPS/GLONASS trackers.
#[derive(Debug, Parser)]
#[command(name = "svoi", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode a captured device-to-server byte stream and print one JSON object per message.
    ///
    /// Session state (handshake, negotiated FLEX mask) is kept across messages exactly as the
    /// server keeps it. Exit code 0 when every message decoded, 1 when any failed, 2 on usage
    /// or I/O errors.
    Decode(cmd::decode::Args),
    /// Print the FLEX field dictionary (number, name, size, wire type, unit, scale, no-data).
    Fields(cmd::fields::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version requests are not errors.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Decode(args) => cmd::decode::run(&args),
        Command::Fields(args) => cmd::fields::run(&args),
    };
    match result {
        Ok(code) => code,
        // A reader that stops early (`svoi decode | head`) is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("svoi: {e:#}");
            ExitCode::from(2)
        }
    }
}
