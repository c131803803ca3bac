//! `svoi runbook list|show`: the on-call runbooks of `ops/runbooks/`, compiled into the
//! binary so they are at hand on a server that has nothing else of the repository.

use std::process::ExitCode;

use anyhow::{Result, bail};

/// `svoi runbook ...`.
#[derive(Debug, clap::Subcommand)]
pub enum RunbookCommand {
    /// Name and title of every runbook.
    List,
    /// Print one runbook (Markdown).
    Show {
        /// `01-no-frames` or `no-frames`; `README` for the index.
        name: String,
    },
}

/// One embedded runbook.
#[derive(Clone, Copy, Debug)]
pub struct Runbook {
    /// File name without `.md`: `01-no-frames`.
    pub name: &'static str,
    /// The Markdown text.
    pub text: &'static str,
}

macro_rules! runbooks {
    ($($name:literal),* $(,)?) => {
        &[$(Runbook {
            name: $name,
            text: include_str!(concat!("../../../../ops/runbooks/", $name, ".md")),
        }),*]
    };
}

/// Every runbook, the index first.
pub const RUNBOOKS: &[Runbook] = runbooks![
    "README",
    "01-no-frames",
    "02-queue-spike",
    "03-decode-errors-spike",
    "04-db-slow",
    "05-api-5xx-spike",
    "06-backup-restore",
    "07-maintenance-window",
    "08-security-incident",
];

impl Runbook {
    /// The first `# ` heading.
    pub fn title(&self) -> &'static str {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix("# "))
            .unwrap_or(self.name)
            .trim()
    }
}

/// The runbook called `name`: exact, case-insensitive, or without its number (`no-frames`).
pub fn find(name: &str) -> Option<&'static Runbook> {
    let wanted = name.trim().trim_end_matches(".md").to_ascii_lowercase();
    RUNBOOKS.iter().find(|r| {
        let own = r.name.to_ascii_lowercase();
        own == wanted
            || own.split_once('-').is_some_and(|(n, rest)| {
                n.chars().all(|c| c.is_ascii_digit()) && (rest == wanted || n == wanted)
            })
    })
}

/// Runs a runbook command: exit 0, or 2 for an unknown name (with the list).
pub fn run(command: &RunbookCommand) -> Result<ExitCode> {
    match command {
        RunbookCommand::List => {
            for r in RUNBOOKS {
                println!("{:<24} {}", r.name, r.title());
            }
            Ok(ExitCode::SUCCESS)
        }
        RunbookCommand::Show { name } => match find(name) {
            Some(r) => {
                print!("{}", r.text);
                Ok(ExitCode::SUCCESS)
            }
            None => {
                let names: Vec<&str> = RUNBOOKS.iter().map(|r| r.name).collect();
                bail!("no runbook {name:?}; there are: {}", names.join(", "))
            }
        },
    }
}

/// Fenced code blocks of a Markdown text: `(info string, body)`.
#[cfg(test)]
pub(crate) fn code_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match (&mut open, trimmed.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim().to_string(), String::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// Splits a command line like a POSIX shell does for plain words and quotes (no expansion).
#[cfg(test)]
pub(crate) fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                word.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The command lines of a runbook that start with `prefix` (`svoi `, `make `), from
    /// anywhere in the text, with a leading `$ ` prompt removed.
    fn lines_starting(text: &str, prefix: &str) -> Vec<String> {
        text.lines()
            .map(|l| l.trim().trim_start_matches("$ "))
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_runbook_has_the_required_sections() {
        const SECTIONS: &[&str] = &[
            "## Symptoms",
            "## Immediate actions",
            "## Diagnostics",
            "## Mitigations",
            "## Root-cause checklist",
            "## Follow-up",
        ];
        for r in RUNBOOKS.iter().filter(|r| r.name != "README") {
            let mut at = 0;
            for section in SECTIONS {
                let found = r.text[at..].find(section);
                assert!(
                    found.is_some(),
                    "{}: {section} missing or out of order",
                    r.name
                );
                at += found.unwrap_or(0) + section.len();
            }
            assert_ne!(r.title(), r.name, "{} has a title", r.name);
        }
    }

    #[test]
    fn every_svoi_command_in_the_runbooks_parses() {
        let mut checked = 0;
        for r in RUNBOOKS {
            for line in lines_starting(r.text, "svoi ") {
                let words = shell_words(&line);
                if let Err(e) = crate::Cli::try_parse_from(&words) {
                    panic!("{}: `{line}` does not parse:\n{e}", r.name);
                }
                checked += 1;
            }
        }
        assert!(checked >= 40, "only {checked} svoi command lines found");
    }

    #[test]
    fn every_make_target_in_the_runbooks_exists() {
        let makefile = include_str!("../../../../Makefile");
        let targets: Vec<&str> = makefile
            .lines()
            .filter_map(|l| l.split_once(':').map(|(t, _)| t))
            .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .collect();
        let mut checked = 0;
        for r in RUNBOOKS {
            for line in lines_starting(r.text, "make ") {
                for word in shell_words(&line).iter().skip(1) {
                    if word.contains('=') || word.starts_with('-') {
                        continue;
                    }
                    assert!(
                        targets.contains(&word.as_str()),
                        "{}: `{line}`: no make target {word:?}",
                        r.name
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 10, "only {checked} make targets found");
    }

    #[test]
    fn every_sqlite_query_in_the_runbooks_runs_on_the_real_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svoi.db");
        let url: svoi_store::DbUrl = format!("sqlite:{}", path.display()).parse().unwrap();
        drop(svoi_store::Store::open(&url, &svoi_store::StoreOptions::default()).unwrap());
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut checked = 0;
        for r in RUNBOOKS {
            for (info, body) in code_blocks(r.text) {
                if info != "sql" {
                    continue;
                }
                for statement in body.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                    let run = || -> rusqlite::Result<()> {
                        let mut st = conn.prepare(statement)?;
                        assert!(st.readonly(), "{}: not read-only: {statement}", r.name);
                        let mut rows = st.query([])?;
                        while rows.next()?.is_some() {}
                        Ok(())
                    };
                    if let Err(e) = run() {
                        panic!("{}: {e}\n{statement}", r.name);
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked >= 5, "only {checked} SQL statements found");
    }

    #[test]
    fn names_are_found_with_or_without_their_number() {
        assert_eq!(find("01-no-frames").unwrap().name, "01-no-frames");
        assert_eq!(find("no-frames").unwrap().name, "01-no-frames");
        assert_eq!(find("04").unwrap().name, "04-db-slow");
        assert_eq!(find("readme").unwrap().name, "README");
        assert!(find("frames").is_none());
    }

    #[test]
    fn shell_words_split_like_a_shell() {
        assert_eq!(
            shell_words(r#"svoi incident new --title "API 5xx spike" --dir 'a b'"#),
            vec![
                "svoi",
                "incident",
                "new",
                "--title",
                "API 5xx spike",
                "--dir",
                "a b"
            ]
        );
        assert_eq!(shell_words("a\\ b  c"), vec!["a b", "c"]);
    }
}
