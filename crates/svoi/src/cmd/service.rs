//! `svoi service start|stop|restart|status`: `svoi serve` as a background process with a pid
//! file, for machines without systemd (the Makefile's `start`/`stop`/`status` fall back to it).
//!
//! **How the background server gets this invocation's configuration.** The child is this very
//! executable (`std::env::current_exe()`) run as `svoi [--config FILE] serve` in the same
//! working directory. It inherits the environment, so `SVOI_CONFIG` and every `SVOI_*`
//! variable reach it unchanged; the config file (whichever of `--config` or `SVOI_CONFIG` named
//! it) is passed as an absolute `--config`; and every key whose value came from a flag
//! (`--db`, `--log-format`, `--log-file`) or the environment is set again as its `SVOI_<KEY>`
//! variable (`ingest.listen` → `SVOI_INGEST_LISTEN`), the database URL with its real password
//! rather than the redacted text. The child thus loads the same effective configuration through
//! the same layers; `svoi config check` in the child would show flag values as `env:`. When
//! `log.file` is unset the child logs to `svoi.log` beside the pid file, and its standard
//! output and error are appended to `svoi.out` there.
//!
//! A pid file is trusted only when its process is alive and is a `svoi ... serve` (name or
//! executable `svoi`, argument `serve`): a pid reused by another program is never signalled.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use sysinfo::{Pid, Process, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, Signal, System};

use crate::config::{Loaded, Source};
use crate::probe;

/// Where the pid file is unless `--pid-file` says otherwise.
pub const DEFAULT_PID_FILE: &str = "data/svoi.pid";

/// How long `start` waits for `/ready` to answer 200.
const READY_WAIT: Duration = Duration::from_secs(60);

/// Added to `ingest.shutdown_grace` before `stop` gives up on SIGTERM and sends SIGKILL: the
/// HTTP side and the database close after the ingest drain.
const STOP_SLACK: Duration = Duration::from_secs(20);

/// How long a process gets to disappear after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// How often the waits look again.
const POLL: Duration = Duration::from_millis(200);

/// `svoi service ...`.
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ServiceAction,
    /// The pid file of the background server.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_PID_FILE)]
    pub pid_file: PathBuf,
}

/// A service action.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum ServiceAction {
    /// Start `svoi serve` in the background and wait until it is ready.
    Start,
    /// Stop it: SIGTERM, then SIGKILL after the grace period.
    Stop,
    /// Stop, then start.
    Restart,
    /// Whether it runs (exit 0) or not (exit 1).
    Status,
}

/// Runs a service action.
pub fn run(args: &ServiceArgs, loaded: &Loaded) -> Result<ExitCode> {
    match args.action {
        ServiceAction::Start => start(&args.pid_file, loaded),
        ServiceAction::Stop => stop(&args.pid_file, loaded).map(|()| ExitCode::SUCCESS),
        ServiceAction::Restart => {
            stop(&args.pid_file, loaded)?;
            start(&args.pid_file, loaded)
        }
        ServiceAction::Status => status(&args.pid_file),
    }
}

/// One running `svoi serve` process, as measured.
#[derive(Clone, Debug, Serialize)]
pub struct ServeProcess {
    /// Process id.
    pub pid: u32,
    /// Seconds since the process started.
    pub uptime_seconds: u64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// CPU use over the sampling interval, percent of one core (`None` when not sampled).
    pub cpu_percent: Option<f32>,
    /// Start time, Unix seconds (tells a reused pid apart).
    #[serde(skip)]
    pub start_time: u64,
}

impl ServeProcess {
    fn of(process: &Process) -> Self {
        ServeProcess {
            pid: process.pid().as_u32(),
            uptime_seconds: now_unix().saturating_sub(process.start_time()),
            rss_bytes: process.memory(),
            cpu_percent: None,
            start_time: process.start_time(),
        }
    }
}

/// What the process table needs refreshed to recognise and describe a `svoi serve`
/// (threads are left out: they would count as processes of their own).
fn refresh_kind() -> ProcessRefreshKind {
    ProcessRefreshKind::nothing()
        .with_cmd(sysinfo::UpdateKind::Always)
        .with_exe(sysinfo::UpdateKind::Always)
        .with_memory()
        .with_cpu()
}

/// Whether `process` is a live `svoi serve`: named `svoi` (process name, executable or
/// `argv[0]`) with `serve` among its arguments, and not a zombie.
pub fn is_svoi_serve(process: &Process) -> bool {
    let svoi = OsStr::new("svoi");
    let named = process.name() == svoi
        || process.exe().and_then(Path::file_name) == Some(svoi)
        || process.cmd().first().and_then(|a| Path::new(a).file_name()) == Some(svoi);
    named
        && process.thread_kind().is_none()
        && !matches!(
            process.status(),
            ProcessStatus::Zombie | ProcessStatus::Dead
        )
        && process.cmd().iter().skip(1).any(|a| a == "serve")
}

/// Every `svoi serve` on this host, by pid, with CPU use sampled over `sample` (none when
/// zero). The caller's own process is never one (it is not `serve`).
pub fn serve_processes(sample: Duration) -> Vec<ServeProcess> {
    let mut system = System::new();
    system.refresh_processes_specifics(ProcessesToUpdate::All, true, refresh_kind());
    let mut pids: Vec<Pid> = system
        .processes()
        .values()
        .filter(|p| is_svoi_serve(p))
        .map(Process::pid)
        .collect();
    pids.sort();
    if pids.is_empty() {
        return Vec::new();
    }
    let sampled = !sample.is_zero();
    if sampled {
        std::thread::sleep(sample.max(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL));
        system.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, refresh_kind());
    }
    pids.iter()
        .filter_map(|pid| system.process(*pid))
        .filter(|p| is_svoi_serve(p))
        .map(|p| ServeProcess {
            cpu_percent: sampled.then(|| p.cpu_usage()),
            ..ServeProcess::of(p)
        })
        .collect()
}

/// What a pid file says.
#[derive(Debug)]
enum PidFile {
    /// No pid file.
    Missing,
    /// The pid file names no live `svoi serve`; why, for the message.
    Stale(String),
    /// The pid file names this running server.
    Running(ServeProcess),
}

/// Reads the pid file and looks its process up.
fn inspect(pid_file: &Path) -> Result<PidFile> {
    let text = match std::fs::read_to_string(pid_file) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(PidFile::Missing),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read pid file {}", pid_file.display()));
        }
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return Ok(PidFile::Stale(format!(
            "it holds {:?}, not a process id",
            text.trim()
        )));
    };
    let mut system = System::new();
    let pids = [Pid::from_u32(pid)];
    system.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, refresh_kind());
    Ok(match system.process(pids[0]) {
        None => PidFile::Stale(format!("process {pid} is gone")),
        Some(p) if matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead) => {
            PidFile::Stale(format!("process {pid} has exited"))
        }
        Some(p) if !is_svoi_serve(p) => PidFile::Stale(format!(
            "pid {pid} now belongs to {:?}, not svoi serve",
            p.name()
        )),
        Some(p) => PidFile::Running(ServeProcess::of(p)),
    })
}

/// Whether the process `pid` that started at `start_time` still runs (a zombie does not).
fn still_running(pid: u32, start_time: u64) -> bool {
    let mut system = System::new();
    let pids = [Pid::from_u32(pid)];
    system.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, refresh_kind());
    system.process(pids[0]).is_some_and(|p| {
        p.start_time() == start_time
            && !matches!(p.status(), ProcessStatus::Zombie | ProcessStatus::Dead)
    })
}

/// Sends `signal` to `pid` if it is still the process that started at `start_time`; whether
/// it was delivered (false: the process is gone already).
fn signal(pid: u32, start_time: u64, signal: Signal) -> Result<bool> {
    let mut system = System::new();
    let pids = [Pid::from_u32(pid)];
    system.refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, refresh_kind());
    let Some(process) = system
        .process(pids[0])
        .filter(|p| p.start_time() == start_time)
    else {
        return Ok(false);
    };
    match process.kill_with(signal) {
        Some(true) => Ok(true),
        Some(false) if !process.exists() => Ok(false),
        Some(false) => bail!("cannot send {signal:?} to process {pid} (permission denied?)"),
        None => bail!("{signal:?} is not supported on this platform"),
    }
}

/// Waits until the process is gone or `limit` passes; whether it is gone.
fn wait_gone(pid: u32, start_time: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !still_running(pid, start_time) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

fn remove_pid_file(pid_file: &Path) -> Result<()> {
    match std::fs::remove_file(pid_file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", pid_file.display())),
    }
}

/// `svoi service stop`: SIGTERM, wait `ingest.shutdown_grace` + 20 s, then SIGKILL. Not
/// running is success.
fn stop(pid_file: &Path, loaded: &Loaded) -> Result<()> {
    let shown = pid_file.display();
    let process = match inspect(pid_file)? {
        PidFile::Missing => {
            println!("svoi is not running (no pid file {shown})");
            return Ok(());
        }
        PidFile::Stale(why) => {
            remove_pid_file(pid_file)?;
            println!("svoi is not running; removed the stale pid file {shown} ({why})");
            return Ok(());
        }
        PidFile::Running(p) => p,
    };
    let pid = process.pid;
    let limit = loaded.config.ingest.shutdown_grace + STOP_SLACK;
    println!(
        "stopping svoi (pid {pid}): SIGTERM, SIGKILL after {}",
        humantime::format_duration(limit)
    );
    let sent = signal(pid, process.start_time, Signal::Term)?;
    if sent && !wait_gone(pid, process.start_time, limit) {
        println!(
            "svoi (pid {pid}) still runs after {}: SIGKILL",
            humantime::format_duration(limit)
        );
        signal(pid, process.start_time, Signal::Kill)?;
        if !wait_gone(pid, process.start_time, KILL_WAIT) {
            bail!("process {pid} still runs after SIGKILL; pid file {shown} kept",);
        }
    }
    remove_pid_file(pid_file)?;
    println!("svoi stopped (pid {pid})");
    Ok(())
}

/// `svoi service status`: 0 running, 1 not.
fn status(pid_file: &Path) -> Result<ExitCode> {
    let shown = pid_file.display();
    match inspect(pid_file)? {
        PidFile::Running(p) => {
            println!(
                "svoi is running: pid {}, up {}, RSS {} (pid file {shown})",
                p.pid,
                humantime::format_duration(Duration::from_secs(p.uptime_seconds)),
                human_bytes(p.rss_bytes)
            );
            Ok(ExitCode::SUCCESS)
        }
        PidFile::Missing => {
            println!("svoi is not running (no pid file {shown})");
            Ok(ExitCode::from(1))
        }
        PidFile::Stale(why) => {
            println!(
                "svoi is not running: the pid file {shown} is stale ({why}); \
                 `svoi service stop` removes it"
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// The directory of the pid file, where `svoi.out` (and by default `svoi.log`) go.
pub fn service_dir(pid_file: &Path) -> PathBuf {
    match pid_file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `SVOI_` + the key uppercased with `.` → `_`, as the configuration loader reads it.
fn env_var(key: &str) -> String {
    format!("SVOI_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// How the child is told this invocation's configuration: the config file to pass as
/// `--config` and the `SVOI_*` variables to set (see the module doc).
#[derive(Debug, PartialEq, Eq)]
struct ChildConfig {
    config_file: Option<PathBuf>,
    env: Vec<(String, String)>,
}

fn child_config(loaded: &Loaded, default_log: &Path) -> Result<ChildConfig> {
    let mut config_file = None;
    let mut env = Vec::new();
    for (key, shown, source) in &loaded.sources {
        match source {
            Source::File { path, .. } => {
                if config_file.is_none() {
                    config_file = Some(std::path::absolute(path).unwrap_or_else(|_| path.clone()));
                }
            }
            Source::Env(_) | Source::Flag(_) => {
                // Shown values are the canonical text of each key, which parses back to the
                // same value; only the database URL is redacted there.
                let value = if *key == "db" {
                    loaded.config.db.clone()
                } else if shown.contains("***") {
                    match source {
                        // The variable itself reaches the child unchanged.
                        Source::Env(_) => continue,
                        _ => bail!(
                            "cannot pass the secret key {key} to the background server; set it in the config file or the environment"
                        ),
                    }
                } else {
                    shown.clone()
                };
                env.push((env_var(key), value));
            }
            Source::Default => {}
        }
    }
    if loaded.config.log.file.is_none() {
        let log = std::path::absolute(default_log).unwrap_or_else(|_| default_log.to_path_buf());
        env.push((env_var("log.file"), log.display().to_string()));
    }
    Ok(ChildConfig { config_file, env })
}

/// `svoi service start`: refuses when a server runs already, else spawns one, writes the pid
/// file and waits for `/ready`.
fn start(pid_file: &Path, loaded: &Loaded) -> Result<ExitCode> {
    let shown = pid_file.display();
    match inspect(pid_file)? {
        PidFile::Running(p) => {
            println!(
                "svoi is already running (pid {}, pid file {shown}); not starting another",
                p.pid
            );
            return Ok(ExitCode::from(1));
        }
        PidFile::Stale(why) => {
            remove_pid_file(pid_file)?;
            println!("removed the stale pid file {shown} ({why})");
        }
        PidFile::Missing => {}
    }
    let base = probe::api_base(&loaded.config, None);
    let api = probe::Api::new(&base, Duration::from_secs(2));
    if api.get("/health", None).is_ok() {
        println!("something already answers on {base} (api.listen); not starting another server");
        return Ok(ExitCode::from(1));
    }

    let dir = service_dir(pid_file);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    let out_path = dir.join("svoi.out");
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out_path)
        .with_context(|| format!("cannot open {}", out_path.display()))?;
    let err = out
        .try_clone()
        .with_context(|| format!("cannot open {}", out_path.display()))?;
    let child_config = child_config(loaded, &dir.join("svoi.log"))?;
    let exe = std::env::current_exe().context("cannot find the svoi executable")?;
    let mut command = Command::new(&exe);
    if let Some(file) = &child_config.config_file {
        command.arg("--config").arg(file);
    }
    command
        .arg("serve")
        .envs(child_config.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        // Its own process group: a Ctrl-C in the terminal that ran `make start` must not
        // reach the server.
        .process_group(0);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {} serve", exe.display()))?;
    let pid = child.id();
    std::fs::write(pid_file, format!("{pid}\n"))
        .with_context(|| format!("cannot write pid file {shown}"))?;
    let log = loaded
        .config
        .log
        .file
        .clone()
        .unwrap_or_else(|| dir.join("svoi.log"));
    println!(
        "started svoi serve (pid {pid}); log {}, output {}; waiting for {base}/ready",
        log.display(),
        out_path.display()
    );

    let deadline = Instant::now() + READY_WAIT;
    loop {
        if let Some(exit) = child.try_wait().context("cannot watch the server")? {
            remove_pid_file(pid_file)?;
            eprintln!(
                "svoi serve exited ({exit}) before it was ready; the end of {}:",
                out_path.display()
            );
            let tail = probe::tail(&out_path, 4096).unwrap_or_default();
            for line in tail
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                eprintln!("  {line}");
            }
            return Ok(ExitCode::from(1));
        }
        if loaded.config.api.listen.port() == 0 {
            println!("api.listen has port 0: not waiting for /ready; svoi serve runs (pid {pid})");
            return Ok(ExitCode::SUCCESS);
        }
        if api.get("/ready", None).is_ok_and(|a| a.status == 200) {
            println!("svoi is ready (pid {pid}, {base})");
            return Ok(ExitCode::SUCCESS);
        }
        if Instant::now() >= deadline {
            println!(
                "svoi serve (pid {pid}) is not ready after {}; it keeps running: see {} \
                 and `svoi service stop`",
                humantime::format_duration(READY_WAIT),
                out_path.display()
            );
            return Ok(ExitCode::from(1));
        }
        std::thread::sleep(POLL);
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `45.1 MiB`: bytes in binary units with one decimal.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Overrides, load};

    #[test]
    fn service_child_gets_flags_and_env_as_variables_and_the_real_db_password() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svoi.toml");
        std::fs::write(&file, "[ingest]\nqueue_capacity = 77\n").unwrap();
        let env = vec![("SVOI_API_LISTEN".to_string(), "127.0.0.1:9".to_string())];
        let overrides = Overrides::default()
            .with("db", "--db", Some("postgres://u:pw@h/db"))
            .with("log.format", "--log-format", Some("json"));
        let loaded = load(Some(&file), &env, &overrides).unwrap();
        let child = child_config(&loaded, Path::new("/x/svoi.log")).unwrap();
        assert_eq!(child.config_file.as_deref(), Some(file.as_path()));
        let get = |k: &str| {
            child
                .env
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("SVOI_DB"), Some("postgres://u:pw@h/db"));
        assert_eq!(get("SVOI_LOG_FORMAT"), Some("json"));
        assert_eq!(get("SVOI_API_LISTEN"), Some("127.0.0.1:9"));
        assert_eq!(get("SVOI_LOG_FILE"), Some("/x/svoi.log"));
        assert_eq!(
            get("SVOI_INGEST_QUEUE_CAPACITY"),
            None,
            "comes from the file"
        );
        // The child's configuration is the parent's.
        let again = load(
            child.config_file.as_deref(),
            &child.env,
            &Overrides::default(),
        )
        .unwrap();
        let mut expected = loaded.config.clone();
        expected.log.file = Some(PathBuf::from("/x/svoi.log"));
        assert_eq!(again.config, expected);
    }

    #[test]
    fn service_log_file_is_not_overridden_when_set() {
        let overrides = Overrides::default().with("log.file", "--log-file", Some("/var/log/s.log"));
        let loaded = load(None, &[], &overrides).unwrap();
        let child = child_config(&loaded, Path::new("/x/svoi.log")).unwrap();
        assert_eq!(child.config_file, None);
        assert_eq!(
            child.env,
            vec![("SVOI_LOG_FILE".to_string(), "/var/log/s.log".to_string())]
        );
    }

    #[test]
    fn service_dir_and_units() {
        assert_eq!(service_dir(Path::new("svoi.pid")), PathBuf::from("."));
        assert_eq!(
            service_dir(Path::new("data/svoi.pid")),
            PathBuf::from("data")
        );
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(45 << 20), "45.0 MiB");
    }
}
