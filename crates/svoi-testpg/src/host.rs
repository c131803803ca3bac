//! What the host machine provides: the PostgreSQL binaries, the OS user the server runs as,
//! a directory that user can reach, a free loopback port, and the watchdog process that
//! cleans a cluster up after the test process is gone.
//!
//! PostgreSQL's server programs refuse to run as root, so when tests run as root (as CI does)
//! every server program goes through `runuser -u postgres --` and the cluster directory is
//! handed to that user; otherwise they run directly as the current user.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The OS user PostgreSQL's server programs run as when the tests run as root.
const SERVER_USER: &str = "postgres";

/// How to run the server programs (`initdb`, `pg_ctl`) of one PostgreSQL installation.
#[derive(Debug, Clone)]
pub(crate) struct Tools {
    /// The directory holding `initdb`, `pg_ctl` and `postgres`.
    pub(crate) bin: PathBuf,
    /// `runuser` when we are root and the programs must run as [`SERVER_USER`].
    runuser: Option<PathBuf>,
    /// The uid and gid of [`SERVER_USER`] when we are root.
    owner: Option<(u32, u32)>,
}

impl Tools {
    /// Finds the server binaries and, when running as root, the user to run them as.
    /// Panics with what is missing and how to provide it.
    pub(crate) fn discover() -> Tools {
        let bin = server_bin_dir();
        for program in ["initdb", "pg_ctl", "postgres"] {
            if !bin.join(program).is_file() {
                panic!(
                    "svoi-testpg: {} is missing from the PostgreSQL bin directory {}; \
                     install the Debian package postgresql-15 or set SVOI_PG_BIN",
                    program,
                    bin.display()
                );
            }
        }
        if !is_root() {
            return Tools {
                bin,
                runuser: None,
                owner: None,
            };
        }
        let owner = (id_of("-u"), id_of("-g"));
        let runuser = find_program("runuser", &["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
            .unwrap_or_else(|| {
                panic!(
                    "svoi-testpg: running as root needs `runuser` (util-linux) to start PostgreSQL \
                     as the {SERVER_USER} user, and it is not on PATH"
                )
            });
        Tools {
            bin,
            runuser: Some(runuser),
            owner: Some(owner),
        }
    }

    /// A command running the server program `program`, as the server user when we are root,
    /// in `cwd` (a directory the server user can enter), with English messages.
    pub(crate) fn command(&self, program: &str, cwd: &Path) -> Command {
        let path = self.bin.join(program);
        let mut cmd = match &self.runuser {
            Some(runuser) => {
                let mut cmd = Command::new(runuser);
                cmd.args(["-u", SERVER_USER, "--"]).arg(path);
                cmd
            }
            None => Command::new(path),
        };
        cmd.current_dir(cwd)
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .stdin(Stdio::null());
        cmd
    }

    /// The same as [`Tools::command`] as a shell command line, for the watchdog script.
    fn shell_command(&self, program: &str) -> String {
        let path = shell_quote(&self.bin.join(program).to_string_lossy());
        match &self.runuser {
            Some(runuser) => {
                format!(
                    "{} -u {SERVER_USER} -- {path}",
                    shell_quote(&runuser.to_string_lossy())
                )
            }
            None => path,
        }
    }

    /// Creates a fresh, empty directory for one cluster that the server user owns and can
    /// reach, under the system temp directory (or `/tmp` when the server user cannot reach
    /// that one, such as a temp directory under `/root`).
    pub(crate) fn make_cluster_dir(&self) -> PathBuf {
        let mut base = std::env::temp_dir();
        if self.owner.is_some() && !reachable_by_others(&base) {
            base = PathBuf::from("/tmp");
            if !reachable_by_others(&base) {
                panic!(
                    "svoi-testpg: neither the temp directory nor /tmp can be entered by the \
                     {SERVER_USER} user; set TMPDIR to a directory with mode 0755 parents"
                );
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("svoi-testpg-")
            .permissions(fs::Permissions::from_mode(0o755))
            .tempdir_in(&base)
            .unwrap_or_else(|e| {
                panic!(
                    "svoi-testpg: cannot create a cluster directory in {}: {e}",
                    base.display()
                )
            })
            .keep();
        // The umask may have narrowed the mode the builder asked for.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap_or_else(|e| {
            panic!("svoi-testpg: cannot set the mode of {}: {e}", dir.display())
        });
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap_or_else(|e| {
                panic!(
                    "svoi-testpg: cannot give {} to the {SERVER_USER} user: {e}",
                    dir.display()
                )
            });
        }
        dir
    }

    /// Starts a detached shell that waits for this process to exit, then stops the cluster in
    /// `dir` (immediate mode) and removes `dir`. It runs in its own process group so that a
    /// Ctrl-C aimed at the tests does not kill it before it has cleaned up.
    pub(crate) fn spawn_watchdog(&self, dir: &Path, data: &Path) -> Option<Child> {
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {pg_ctl} stop -m immediate -w -D {data} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            pg_ctl = self.shell_command("pg_ctl"),
            data = shell_quote(&data.to_string_lossy()),
            dir = shell_quote(&dir.to_string_lossy()),
        );
        // A cluster without a watchdog is still stopped by `Drop`; only an aborted test
        // process would leave it behind, so a failed spawn is not worth failing the tests.
        Command::new("sh")
            .args(["-c", &script])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ok()
    }
}

/// The directory with `initdb`, `pg_ctl` and `postgres`: `SVOI_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian's layout) holding `initdb`, else `pg_config --bindir`.
fn server_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SVOI_PG_BIN") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = newest_debian_bin_dir(Path::new("/usr/lib/postgresql")) {
        return dir;
    }
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() {
            return dir;
        }
    }
    panic!(
        "svoi-testpg: PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: none in \
         SVOI_PG_BIN, /usr/lib/postgresql/*/bin or `pg_config --bindir`; install the Debian \
         package postgresql-15, set SVOI_PG_BIN, or point SVOI_TEST_PG_URL at a running server"
    )
}

/// The `bin` directory of the highest PostgreSQL version under `root` that has `initdb`.
fn newest_debian_bin_dir(root: &Path) -> Option<PathBuf> {
    let mut best: Option<((u32, u32), PathBuf)> = None;
    for entry in fs::read_dir(root).ok()?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let mut parts = name.split('.');
        let Some(Ok(major)) = parts.next().map(str::parse::<u32>) else {
            continue;
        };
        let minor = parts
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(0);
        let bin = entry.path().join("bin");
        if bin.join("initdb").is_file() && best.as_ref().is_none_or(|(v, _)| (major, minor) > *v) {
            best = Some(((major, minor), bin));
        }
    }
    best.map(|(_, bin)| bin)
}

/// The `psql` to use: the one next to the server binaries when those are found, else `psql`
/// from PATH (enough for a server given by `SVOI_TEST_PG_URL`).
pub(crate) fn psql_program(bin: Option<&Path>) -> PathBuf {
    if let Some(psql) = bin.map(|b| b.join("psql")).filter(|p| p.is_file()) {
        return psql;
    }
    if let Some(dir) = std::env::var_os("SVOI_PG_BIN").map(PathBuf::from)
        && dir.join("psql").is_file()
    {
        return dir.join("psql");
    }
    PathBuf::from("psql")
}

/// Whether this process runs with effective uid 0.
fn is_root() -> bool {
    // /proc/self/status has "Uid: real effective saved fs".
    if let Ok(status) = fs::read_to_string("/proc/self/status")
        && let Some(line) = status.lines().find(|l| l.starts_with("Uid:"))
        && let Some(euid) = line.split_whitespace().nth(2)
    {
        return euid == "0";
    }
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The uid (`-u`) or gid (`-g`) of [`SERVER_USER`].
fn id_of(flag: &str) -> u32 {
    Command::new("id")
        .args([flag, SERVER_USER])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "svoi-testpg: running as root, PostgreSQL must run as the OS user \
                 {SERVER_USER}, which does not exist (the postgresql-15 package creates it)"
            )
        })
}

/// `name` in a PATH directory or in one of `extra`.
fn find_program(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Whether every directory from `/` down to `dir` can be entered by other users.
fn reachable_by_others(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    dir.ancestors()
        .all(|d| fs::metadata(d).is_ok_and(|m| m.is_dir() && m.mode() & 0o001 != 0))
}

/// A loopback port nobody listens on right now (the kernel's pick for port 0).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("svoi-testpg: cannot bind a loopback port: {e}"))
}

/// Everything in `path` from byte `from` on, lossily decoded; empty when unreadable.
pub(crate) fn read_from(path: &Path, from: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = fs::File::open(path)
        && file.seek(SeekFrom::Start(from)).is_ok()
    {
        let _ = file.read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `s` as one single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_version_wins_numerically() {
        let root = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        for version in ["9.6", "15", "13", "notaversion"] {
            let bin = root.path().join(version).join("bin");
            fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("mkdir: {e}"));
            fs::write(bin.join("initdb"), "").unwrap_or_else(|e| panic!("write: {e}"));
        }
        // A newer version without initdb (only the client installed) does not count.
        fs::create_dir_all(root.path().join("16/bin")).unwrap_or_else(|e| panic!("mkdir: {e}"));
        assert_eq!(
            newest_debian_bin_dir(root.path()),
            Some(root.path().join("15/bin"))
        );
    }

    #[test]
    fn shell_quote_survives_quotes() {
        assert_eq!(shell_quote("/tmp/a'b"), r"'/tmp/a'\''b'");
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
