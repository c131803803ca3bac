//! `svoi token create|list|revoke`: API bearer tokens in the configured database. Only a hash
//! of each token is stored; `create` prints the token once, as the last line of its output.
//! Works while the server runs: the server looks tokens up on every request.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use svoi_store::TokenScope;

use crate::config::Loaded;
use crate::timearg::format_us;

/// `svoi token ...`.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (once: only its hash is stored).
    Create {
        /// Name to list and revoke it by (letters, digits, `.`, `_`, `-`; at most 64).
        #[arg(long)]
        name: String,
        /// `read` for every GET route, `admin` for everything.
        #[arg(long, default_value = "read", value_parser = ["read", "admin"])]
        scope: String,
    },
    /// List tokens (names, scopes, creation and revocation times; never the tokens).
    List {
        /// One JSON object per token instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke the active token with this name (takes effect on the next request).
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// Runs a token command: exit 0 done, 1 nothing to revoke, 2 error.
pub fn run(command: &TokenCommand, loaded: &Loaded) -> Result<ExitCode> {
    let mut store = crate::cmd::open_store(loaded)?;
    match command {
        TokenCommand::Create { name, scope } => {
            check_name(name)?;
            let scope: TokenScope = scope.parse().context("--scope")?;
            let (text, row) = svoi_api::token::generate(name, scope);
            store
                .create_token(&row)
                .with_context(|| format!("cannot create token {name:?}"))?;
            println!("created token {name:?} with scope {scope} (id {})", row.id);
            println!("it is shown only now; use it as: Authorization: Bearer <token>");
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::List { json } => {
            let tokens = store.tokens().context("cannot list tokens")?;
            if *json {
                for t in &tokens {
                    let line = serde_json::json!({
                        "name": t.name,
                        "id": t.id,
                        "scope": t.scope.as_str(),
                        "created_at": format_us(t.created_at_us),
                        "revoked_at": t.revoked_at_us.map(format_us),
                    });
                    println!("{line}");
                }
            } else {
                println!(
                    "{:<24} {:<6} {:<14} {:<21} REVOKED",
                    "NAME", "SCOPE", "ID", "CREATED"
                );
                for t in &tokens {
                    println!(
                        "{:<24} {:<6} {:<14} {:<21} {}",
                        t.name,
                        t.scope.as_str(),
                        t.id,
                        format_us(t.created_at_us),
                        t.revoked_at_us.map_or_else(|| "-".to_string(), format_us)
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke { name } => {
            if store
                .revoke_token(name)
                .with_context(|| format!("cannot revoke token {name:?}"))?
            {
                println!("revoked token {name:?}");
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("svoi: no active token named {name:?}");
                Ok(ExitCode::from(1))
            }
        }
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        bail!("invalid token name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-'");
    }
    Ok(())
}
