//! [`Cluster`]: one PostgreSQL server, either started by us in a temp directory (and then ours
//! to stop, restart and remove) or given by `SVOI_TEST_PG_URL` (and then only used).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::host::{self, Tools};
use crate::{PsqlError, TestDb, run_psql};

/// Seconds `pg_ctl` waits for the server to start or stop.
const PG_CTL_TIMEOUT_SECS: &str = "60";
/// Lines of the server log shown when something fails.
const LOG_TAIL_LINES: usize = 30;

/// Numbers the databases this process creates, across all clusters.
static NEXT_DB: AtomicU64 = AtomicU64::new(0);

/// One PostgreSQL server tests can use.
///
/// A cluster from [`Cluster::start`] lives in its own temp directory and is stopped and
/// removed when dropped; one from `SVOI_TEST_PG_URL` (see [`crate::shared`]) is only used.
#[derive(Debug)]
pub struct Cluster {
    /// Scheme, user info, host and port, such as `postgres://postgres@127.0.0.1:5433`.
    authority: String,
    /// The URL's query string with its `?`, or empty.
    query: String,
    /// The database superuser connections go to for administration (`CREATE DATABASE`).
    admin_db: String,
    port: u16,
    psql: PathBuf,
    /// Set for clusters we started; `None` for a server given by URL.
    own: Option<Own>,
    /// Whether this is the process-wide [`crate::shared`] cluster, which must keep running.
    shared: bool,
}

/// What only a cluster we started has.
#[derive(Debug)]
struct Own {
    tools: Tools,
    /// The cluster's directory: the data directory, the socket and the server log.
    dir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    /// The process that cleans up if this process dies before `Drop` runs.
    watchdog: Option<Child>,
}

impl Cluster {
    /// A cluster of its own: `initdb` in a fresh temp directory (as the `postgres` OS user
    /// when running as root), started on a free loopback port with settings for speed
    /// (`fsync=off`, `full_page_writes=off`), `max_connections=300`, its socket and server
    /// log in its directory. Panics naming what is missing or failed, with the tail of the
    /// server log.
    pub fn start() -> Cluster {
        let tools = Tools::discover();
        let dir = tools.make_cluster_dir();
        let data = dir.join("data");
        let log = dir.join("server.log");
        let watchdog = tools.spawn_watchdog(&dir, &data);
        // From here on a panic drops `cluster`, which stops the server and removes `dir`.
        let mut cluster = Cluster {
            authority: String::new(),
            query: String::new(),
            admin_db: "postgres".to_owned(),
            port: 0,
            psql: host::psql_program(Some(&tools.bin)),
            own: Some(Own {
                tools,
                dir,
                data,
                log,
                watchdog,
            }),
            shared: false,
        };
        let port = cluster.own_or_panic("start()").init_and_start();
        cluster.port = port;
        cluster.authority = format!("postgres://postgres@127.0.0.1:{port}");
        cluster.wait_ready();
        cluster
    }

    /// The server given by an admin URL such as `postgres://postgres@127.0.0.1:5433/postgres`
    /// (a superuser, trust or password in the URL). Never stopped by us.
    pub(crate) fn from_url(url: &str) -> Cluster {
        let parsed = ParsedUrl::parse(url).unwrap_or_else(|e| {
            panic!("svoi-testpg: SVOI_TEST_PG_URL {url:?} is not a PostgreSQL URL: {e}")
        });
        let cluster = Cluster {
            authority: parsed.authority,
            query: parsed.query,
            admin_db: parsed.db,
            port: parsed.port,
            psql: host::psql_program(None),
            own: None,
            shared: false,
        };
        if let Err(e) = cluster.try_psql(&cluster.admin_db, "SELECT 1") {
            panic!("svoi-testpg: the server at SVOI_TEST_PG_URL {url:?} does not answer: {e}");
        }
        cluster
    }

    /// Marks this as the shared cluster, which [`Cluster::stop`] refuses to stop.
    pub(crate) fn into_shared(mut self) -> Cluster {
        self.shared = true;
        self
    }

    /// The server's TCP port on 127.0.0.1 (or on the host of `SVOI_TEST_PG_URL`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser URL of database `dbname` on this server:
    /// `postgres://postgres@127.0.0.1:PORT/DBNAME` for a cluster we started.
    pub fn url(&self, dbname: &str) -> String {
        format!("{}/{dbname}{}", self.authority, self.query)
    }

    /// A fresh, empty database on this cluster, named `svoi_t_<pid>_<counter>_<random hex>`
    /// and dropped when the [`TestDb`] is.
    pub fn database(&self) -> TestDb {
        let counter = NEXT_DB.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "svoi_t_{}_{counter}_{}",
            std::process::id(),
            random_hex(counter)
        );
        self.psql(&self.admin_db, &format!("CREATE DATABASE {name}"));
        TestDb::new(
            name.clone(),
            self.url(&name),
            self.url(&self.admin_db),
            self.psql.clone(),
        )
    }

    /// Stops the server (`pg_ctl stop -m fast -w`); its data stays for
    /// [`Cluster::start_again`]. Only for a cluster of its own from [`Cluster::start`]: the
    /// shared cluster serves other tests running at the same time.
    pub fn stop(&self) {
        if self.shared {
            panic!(
                "svoi-testpg: stop() on the shared cluster would break the other tests; \
                 use a cluster of your own from Cluster::start()"
            );
        }
        let own = self.own_or_panic("stop()");
        let out = own.pg_ctl(&["stop", "-m", "fast", "-w", "-t", PG_CTL_TIMEOUT_SECS]);
        if !out.status.success() {
            panic!("svoi-testpg: pg_ctl stop failed: {}", own.explain(&out, 0));
        }
    }

    /// Starts the server again after [`Cluster::stop`], on the same port and data directory
    /// (`pg_ctl start -w`), and waits until it accepts connections.
    pub fn start_again(&self) {
        let own = self.own_or_panic("start_again()");
        own.pg_ctl_start(self.port).unwrap_or_else(|f| {
            panic!(
                "svoi-testpg: PostgreSQL did not start again on port {}: {f}",
                self.port
            )
        });
        self.wait_ready();
    }

    /// Runs one SQL statement as superuser in database `db` and returns psql's unaligned,
    /// tuples-only (`-At`) output without its final newline. Panics with psql's error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        self.try_psql(db, sql)
            .unwrap_or_else(|e| panic!("svoi-testpg: in database {db}: {e}\nstatement: {sql}"))
    }

    /// [`Cluster::psql`] returning psql's failure instead of panicking, for tests that expect
    /// one (a stopped server, a constraint violation).
    pub fn try_psql(&self, db: &str, sql: &str) -> Result<String, PsqlError> {
        run_psql(&self.psql, &self.url(db), sql)
    }

    /// The directory of a cluster we started (data directory, socket, server log);
    /// `None` for the server given by `SVOI_TEST_PG_URL`.
    pub fn dir(&self) -> Option<&Path> {
        self.own.as_ref().map(|o| o.dir.as_path())
    }

    /// Waits until a query succeeds; `pg_ctl -w` has normally seen to that already.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.try_psql(&self.admin_db, "SELECT 1") {
                Ok(_) => return,
                Err(e) if Instant::now() >= deadline => {
                    let log = self.own.as_ref().map(|o| o.log_tail(0)).unwrap_or_default();
                    panic!("svoi-testpg: PostgreSQL does not accept connections: {e}\n{log}");
                }
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn own_or_panic(&self, what: &str) -> &Own {
        self.own.as_ref().unwrap_or_else(|| {
            panic!(
                "svoi-testpg: {what} needs a cluster started by Cluster::start(), not the server \
                 given by SVOI_TEST_PG_URL"
            )
        })
    }
}

impl Drop for Cluster {
    /// Stops a cluster we started (immediate mode: its data is thrown away anyway) and
    /// removes its directory. A server given by URL is left alone.
    fn drop(&mut self) {
        let Some(own) = &mut self.own else { return };
        if own.data.join("postmaster.pid").exists() {
            let _ = own.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", PG_CTL_TIMEOUT_SECS]);
        }
        let _ = fs::remove_dir_all(&own.dir);
        if let Some(mut watchdog) = own.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

impl Own {
    /// Creates the cluster and starts it on a free port, which it returns.
    fn init_and_start(&self) -> u16 {
        self.initdb();
        // A port free a moment ago can be taken before the server binds it; one retry on a
        // new port covers that race.
        let port = host::free_port();
        let Err(failure) = self.pg_ctl_start(port) else {
            return port;
        };
        if !failure.contains("Address already in use") {
            panic!("svoi-testpg: PostgreSQL did not start: {failure}");
        }
        let port = host::free_port();
        if let Err(failure) = self.pg_ctl_start(port) {
            panic!("svoi-testpg: PostgreSQL did not start: {failure}");
        }
        port
    }

    /// Creates the data directory and appends the test settings to `postgresql.conf`.
    fn initdb(&self) {
        let out = self
            .tools
            .command("initdb", &self.dir)
            .arg("-D")
            .arg(&self.data)
            .args([
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg("--no-instructions")
            .output()
            .unwrap_or_else(|e| panic!("svoi-testpg: cannot run initdb: {e}"));
        if !out.status.success() {
            panic!(
                "svoi-testpg: initdb failed in {}: {}",
                self.dir.display(),
                output_text(&out)
            );
        }
        let settings = format!(
            "\n# svoi-testpg: a disposable cluster for tests; speed over durability.\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             max_connections = 300\n\
             fsync = off\n\
             full_page_writes = off\n",
            self.dir.to_string_lossy().replace('\'', "''")
        );
        self.append_conf(&settings);
    }

    /// Sets the port and runs `pg_ctl start -w`; on failure returns what went wrong with the
    /// part of the server log this attempt wrote.
    fn pg_ctl_start(&self, port: u16) -> Result<(), String> {
        // Later lines win, so each attempt appends its port.
        self.append_conf(&format!("port = {port}\n"));
        let log_start = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let log = self.log.to_string_lossy().into_owned();
        let out = self.pg_ctl(&["start", "-w", "-t", PG_CTL_TIMEOUT_SECS, "-l", &log]);
        if out.status.success() {
            Ok(())
        } else {
            Err(self.explain(&out, log_start))
        }
    }

    fn append_conf(&self, text: &str) {
        let path = self.data.join("postgresql.conf");
        OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .unwrap_or_else(|e| panic!("svoi-testpg: cannot write {}: {e}", path.display()));
    }

    /// Runs `pg_ctl <args> -D <data>`.
    fn pg_ctl(&self, args: &[&str]) -> Output {
        self.tools
            .command("pg_ctl", &self.dir)
            .args(args)
            .arg("-D")
            .arg(&self.data)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("svoi-testpg: cannot run pg_ctl: {e}"))
    }

    /// A failed command's output followed by the server log from byte `log_start` on.
    fn explain(&self, out: &Output, log_start: u64) -> String {
        format!("{}\n{}", output_text(out), self.log_tail(log_start))
    }

    fn log_tail(&self, from: u64) -> String {
        format!(
            "--- server log {} (last lines) ---\n{}",
            self.log.display(),
            host::tail(&host::read_from(&self.log, from), LOG_TAIL_LINES)
        )
    }
}

/// A command's exit status with its stdout and stderr.
fn output_text(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Eight hex digits that differ between processes and calls, so database names from test
/// runs sharing one server (CI's `SVOI_TEST_PG_URL`) never collide.
fn random_hex(counter: u64) -> String {
    use std::hash::{BuildHasher, Hasher};
    // `RandomState` is seeded randomly per process; the time and counter vary per call.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(counter);
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{:08x}", hasher.finish() & 0xffff_ffff)
}

/// The parts of a `postgres://` URL this crate needs.
#[derive(Debug, PartialEq)]
struct ParsedUrl {
    authority: String,
    db: String,
    query: String,
    port: u16,
}

impl ParsedUrl {
    fn parse(url: &str) -> Result<ParsedUrl, String> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or("it does not start with postgres:// or postgresql://")?;
        let authority_len = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, after) = rest.split_at(authority_len);
        let (path, query) = after.split_at(after.find('?').unwrap_or(after.len()));
        let db = path.trim_start_matches('/');
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let port = match host_port.rsplit_once(':') {
            // An IPv6 address in brackets has colons of its own.
            Some((_, p)) if !p.contains(']') => p.parse().map_err(|_| format!("bad port {p:?}"))?,
            _ => 5432,
        };
        if host_port.is_empty() {
            return Err("it names no host".to_owned());
        }
        Ok(ParsedUrl {
            authority: format!("{}{authority}", &url[..url.len() - rest.len()]),
            db: if db.is_empty() {
                "postgres".to_owned()
            } else {
                db.to_owned()
            },
            query: query.to_owned(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_admin_urls() {
        let p = ParsedUrl::parse("postgres://postgres@127.0.0.1:5433/postgres").unwrap();
        assert_eq!(p.authority, "postgres://postgres@127.0.0.1:5433");
        assert_eq!(
            (p.db.as_str(), p.query.as_str(), p.port),
            ("postgres", "", 5433)
        );

        let p = ParsedUrl::parse("postgresql://u:pw@[::1]/admin?sslmode=disable").unwrap();
        assert_eq!(p.authority, "postgresql://u:pw@[::1]");
        assert_eq!(
            (p.db.as_str(), p.query.as_str(), p.port),
            ("admin", "?sslmode=disable", 5432)
        );

        let p = ParsedUrl::parse("postgres://localhost:6000").unwrap();
        assert_eq!((p.db.as_str(), p.port), ("postgres", 6000));

        assert!(ParsedUrl::parse("mysql://x/y").is_err());
        assert!(ParsedUrl::parse("postgres://h:notaport/db").is_err());
    }

    #[test]
    fn random_hex_is_eight_digits_and_varies() {
        let a = random_hex(1);
        assert_eq!(a.len(), 8);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(random_hex(1), random_hex(2));
    }

    #[test]
    fn url_cluster_has_no_dir() {
        let c = Cluster {
            authority: "postgres://postgres@127.0.0.1:1".to_owned(),
            query: String::new(),
            admin_db: "postgres".to_owned(),
            port: 1,
            psql: PathBuf::from("psql"),
            own: None,
            shared: false,
        };
        assert_eq!(c.url("x"), "postgres://postgres@127.0.0.1:1/x");
        assert!(c.dir().is_none());
    }
}
