//! `svoi incident new`: a dated incident file from `ops/templates/incident.md` (compiled in),
//! prefilled with the title, the time, this host and the status snapshot, so that the first
//! minutes of an incident are recorded before anyone starts changing things.
//!
//! The file is `DIR/YYYY-MM-DD-<slug>.md`; an existing file is never overwritten (`-2`, `-3`,
//! ... are appended to the name instead). The path is printed as the last line.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::cmd::emergency;
use crate::config::Loaded;
use crate::probe;

/// The template, as shipped in the repository.
const TEMPLATE: &str = include_str!("../../../../ops/templates/incident.md");

/// The longest slug, in characters.
const SLUG_MAX: usize = 60;

/// `svoi incident ...`.
#[derive(Debug, clap::Subcommand)]
pub enum IncidentCommand {
    /// Write a dated incident file from the template, with the current status snapshot.
    New {
        /// The incident's title.
        #[arg(long)]
        title: String,
        /// Directory of incident files.
        #[arg(long, value_name = "DIR", default_value = "ops/incidents")]
        dir: PathBuf,
        /// API base URL for the snapshot (default: `http://` + `api.listen`).
        #[arg(long, value_name = "URL")]
        api: Option<String>,
    },
}

/// Runs an incident command.
pub fn run(command: &IncidentCommand, loaded: &Loaded) -> Result<ExitCode> {
    let IncidentCommand::New { title, dir, api } = command;
    let Some(slug) = slug(title) else {
        bail!("--title {title:?} has no ASCII letter or digit to name the file by");
    };
    let now = jiff::Timestamp::now();
    let base = probe::api_base(&loaded.config, api.as_deref());
    let snapshot = emergency::snapshot(loaded, &base);
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    let stem = format!("{}-{slug}", now.strftime("%Y-%m-%d"));
    let (path, mut file) = create_new(dir, &stem)?;
    let id = path
        .file_stem()
        .map_or_else(|| stem.clone(), |s| s.to_string_lossy().into_owned());
    let text = fill(
        TEMPLATE,
        &[
            ("title", title.trim()),
            ("date", &now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
            ("id", &id),
            (
                "host",
                &sysinfo::System::host_name().unwrap_or_else(|| "unknown".to_string()),
            ),
            ("status_snapshot", snapshot.to_string().trim_end()),
        ],
    );
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Creates `DIR/STEM.md`, or `STEM-2.md`, `STEM-3.md`, ... when taken.
fn create_new(dir: &Path, stem: &str) -> Result<(PathBuf, std::fs::File)> {
    for n in 1..=1000 {
        let name = if n == 1 {
            format!("{stem}.md")
        } else {
            format!("{stem}-{n}.md")
        };
        let path = dir.join(name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }
    bail!(
        "{} already holds 1000 incident files named {stem}",
        dir.display()
    )
}

/// The file-name part of a title: lowercase ASCII letters and digits, every run of other
/// characters one `-`, no `-` at either end, at most 60 characters; `None` when nothing is left.
pub fn slug(title: &str) -> Option<String> {
    let mut out = String::new();
    let mut gap = false;
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            if gap && !out.is_empty() {
                out.push('-');
            }
            gap = false;
            out.push(c.to_ascii_lowercase());
        } else {
            gap = true;
        }
    }
    out.truncate(SLUG_MAX);
    let out = out.trim_end_matches('-').to_string();
    (!out.is_empty()).then_some(out)
}

/// `template` with every `{{name}}` of `values` replaced, in one pass (a value containing
/// `{{...}}` is not expanded again). Unknown placeholders are left as written.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 4096);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let known = after.find("}}").and_then(|close| {
            let name = after[..close].trim();
            values
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (close, *v))
        });
        match known {
            Some((close, value)) => {
                out.push_str(value);
                rest = &after[close + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incident_slug_keeps_ascii_letters_and_digits() {
        assert_eq!(
            slug("Frames stopped at 03:00 — depot #7!").as_deref(),
            Some("frames-stopped-at-03-00-depot-7")
        );
        assert_eq!(slug("  DB slow  ").as_deref(), Some("db-slow"));
        assert_eq!(slug("a--b__c").as_deref(), Some("a-b-c"));
        assert_eq!(slug("Нет кадров 5221").as_deref(), Some("5221"));
        assert_eq!(slug("Нет кадров"), None);
        assert_eq!(slug("!!!"), None);
        assert_eq!(slug(""), None);
        let long = slug(&"abcd ".repeat(30)).unwrap();
        assert!(long.len() <= SLUG_MAX, "{long}");
        assert!(!long.ends_with('-'), "{long}");
        assert_eq!(slug(&"x".repeat(100)).unwrap().len(), SLUG_MAX);
    }

    #[test]
    fn incident_fill_replaces_placeholders_once() {
        let text = fill(
            "# {{title}}\n{{ id }} {{date}} {{unknown}} {{status_snapshot}} {{",
            &[
                ("title", "T"),
                ("id", "2026-01-01-t"),
                ("date", "D"),
                ("status_snapshot", "has {{title}} inside"),
            ],
        );
        assert_eq!(
            text,
            "# T\n2026-01-01-t D {{unknown}} has {{title}} inside {{"
        );
    }

    #[test]
    fn incident_template_has_no_placeholder_left_after_filling() {
        let text = fill(
            TEMPLATE,
            &[
                ("title", "t"),
                ("date", "d"),
                ("id", "i"),
                ("host", "h"),
                ("status_snapshot", "s"),
            ],
        );
        assert!(
            !text.contains("{{"),
            "unknown placeholder in the template:\n{text}"
        );
        for name in ["title", "status_snapshot"] {
            assert!(TEMPLATE.contains(&format!("{{{{{name}}}}}")), "{name}");
        }
    }
}
