//! `svoi decode [FILE|-] [--hex]`: the operator's protocol-debugging tool. Reads a captured
//! device-to-server stream, decodes it with the same session state machine as the server and
//! prints one JSON object per message (the reference vectors' key names, plus `offset`).

use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use svoi_proto::{Session, json};

/// Arguments of `svoi decode`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Capture to read; `-` or nothing reads standard input.
    file: Option<PathBuf>,
    /// The input is hex text (whitespace ignored) instead of raw bytes.
    #[arg(long)]
    hex: bool,
}

/// Decodes the input; exit code 1 when any message failed to decode.
pub fn run(args: &Args) -> Result<ExitCode> {
    let raw = read_input(args.file.as_deref())?;
    let bytes = if args.hex { parse_hex(&raw)? } else { raw };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let failed = decode_to(&bytes, &mut out).context("cannot write to standard output")?;
    out.flush().context("cannot write to standard output")?;
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn read_input(file: Option<&std::path::Path>) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    match file {
        None => io::stdin().read_to_end(&mut buf).map(drop),
        Some(p) if p.as_os_str() == "-" => io::stdin().read_to_end(&mut buf).map(drop),
        Some(p) => {
            return std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        }
    }
    .context("cannot read standard input")?;
    Ok(buf)
}

/// Hex text to bytes, ignoring ASCII whitespace; errors name the offending character.
fn parse_hex(text: &[u8]) -> Result<Vec<u8>> {
    let digits: Vec<(usize, u8)> = text
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, c)| !c.is_ascii_whitespace())
        .collect();
    if let Some((pos, c)) = digits.iter().find(|(_, c)| !c.is_ascii_hexdigit()) {
        bail!(
            "invalid hex input: {:?} at byte {pos} is not a hex digit",
            char::from(*c)
        );
    }
    if !digits.len().is_multiple_of(2) {
        bail!(
            "invalid hex input: odd number of hex digits ({})",
            digits.len()
        );
    }
    let compact: Vec<u8> = digits.into_iter().map(|(_, c)| c).collect();
    Ok(hex::decode(compact)?)
}

/// Decodes `bytes` as one device session, writing a JSON line per message. Returns whether any
/// message failed.
fn decode_to(bytes: &[u8], out: &mut impl Write) -> io::Result<bool> {
    let mut failed = false;
    for (message, used) in Session::default().messages(bytes) {
        failed |= message.error().is_some();
        serde_json::to_writer(&mut *out, &json::message(&message, used))?;
        out.write_all(b"\n")?;
    }
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ignores_whitespace_and_names_bad_characters() {
        assert_eq!(parse_hex(b" 7e 43\nb9\t").unwrap(), vec![0x7e, 0x43, 0xb9]);
        let e = parse_hex(b"7e4x").unwrap_err().to_string();
        assert!(e.contains("'x' at byte 3"), "{e}");
        assert!(parse_hex(b"7e4").is_err());
    }
}
