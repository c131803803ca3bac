//! The on-call commands driven like an operator drives them, against real processes: `svoi
//! service start|status|stop` with a pid file, `svoi emergency status|logs` on a running and on
//! an absent server, `svoi incident new`. Every run is bounded in time, works in a temporary
//! directory with free loopback ports, and ignores the caller's `SVOI_*` variables.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use util::{BIN, free_addr};

/// What one `svoi` run printed and returned.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }
}

/// `svoi ARGS` in `cwd` with only `env` as `SVOI_*` variables, killed after `limit`.
fn svoi_in(cwd: &Path, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Run {
    let mut out = tempfile::tempfile().unwrap();
    let mut err = tempfile::tempfile().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("SVOI_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(err.try_clone().unwrap()));
    let mut child = cmd.spawn().expect("svoi starts");
    let status = util::wait_for(&mut child, limit);
    let read = |f: &mut std::fs::File| {
        let mut s = String::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_string(&mut s).unwrap();
        s
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: read(&mut out),
        stderr: read(&mut err),
    }
}

fn svoi(cwd: &Path, args: &[&str]) -> Run {
    svoi_in(cwd, args, &[], Duration::from_secs(90))
}

/// Whether process `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat.rsplit_once(')').map_or("", |(_, r)| r.trim_start());
            !(state.starts_with('Z') || state.starts_with('X'))
        }
    }
}

fn kill(pid: u32) {
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -KILL {pid} 2>/dev/null")])
        .status();
}

/// Kills the background server if a test ends without stopping it.
struct Reaper(Option<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(pid) = self.0.filter(|pid| alive(*pid)) {
            kill(pid);
        }
    }
}

/// A config file with the device listener and the API on free loopback ports.
fn config(dir: &Path) -> (SocketAddr, SocketAddr) {
    let (device, api) = (free_addr(), free_addr());
    std::fs::write(
        dir.join("svoi.toml"),
        format!("[ingest]\nlisten = \"{device}\"\nshutdown_grace = \"5s\"\n\n[api]\nlisten = \"{api}\"\n"),
    )
    .unwrap();
    (device, api)
}

/// The entries of a tar.gz bundle: name and text.
fn bundle(path: &Path) -> Vec<(String, String)> {
    let file = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut text = String::new();
            e.read_to_string(&mut text).unwrap();
            (name, text)
        })
        .collect()
}

fn entry<'a>(entries: &'a [(String, String)], name: &str) -> &'a str {
    entries
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t.as_str())
        .unwrap_or_else(|| panic!("no {name} in the bundle"))
}

#[test]
fn service_lifecycle_with_emergency_status_logs_and_incident() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let (device, api) = config(cwd);
    // Flags and the config file of this invocation must reach the background server: the
    // database is named only by --db, the log format only by --log-format.
    let cfg = ["--config", "svoi.toml", "--db", "sqlite:./data/ops.db"];
    let with = |rest: &[&str]| -> Vec<String> {
        cfg.iter().chain(rest).map(ToString::to_string).collect()
    };
    let run = |rest: &[&str]| {
        let args = with(rest);
        svoi(cwd, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let start = run(&["--log-format", "json", "service", "start"]);
    let pid_file = cwd.join("data/svoi.pid");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no pid file after start: {start:?}"));
    let _reaper = Reaper(Some(pid));
    assert_eq!(start.code, 0, "{start:?}");
    assert!(start.stdout.contains("ready"), "{start:?}");
    assert!(alive(pid));
    assert!(cwd.join("data/ops.db").is_file(), "--db reached the server");
    let log = std::fs::read_to_string(cwd.join("data/svoi.log")).unwrap();
    assert!(
        log.lines().next().is_some_and(|l| l.starts_with('{')),
        "--log-format json reached the server, logging to data/svoi.log: {log}"
    );
    assert!(cwd.join("data/svoi.out").is_file());

    let status = svoi(cwd, &["service", "status"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains(&format!("pid {pid}")), "{status:?}");
    assert!(status.stdout.contains("RSS"), "{status:?}");

    let agent = util::client();
    let (code, _) = util::get(&agent, &format!("http://{api}/health"), None);
    assert_eq!(code, 200);

    let before = run(&["emergency", "status"]);
    assert_eq!(before.code, 0, "{before:?}");
    for part in [
        "HEALTHY",
        ", ready (database, device_listener, writer ok)",
        "connections  0 open, 0 devices online",
        "queue        0 of 4096 frames (0.0 %)",
        "last frame   none yet",
        "database     ready check ok, svoi_database_up 1, commit failures 0",
        "writer       up, device listener up",
        "process      pid ",
        "disk         ./data: ",
        "host         memory ",
        "errors       none in the last hour in data/svoi.log",
    ] {
        assert!(
            before.stdout.contains(part),
            "{part:?} in\n{}",
            before.stdout
        );
    }
    assert!(before.stdout.lines().count() <= 35, "{}", before.stdout);

    let sim = util::sim(device, &["--devices", "2", "--records", "10"])
        .output()
        .unwrap();
    assert!(
        sim.status.success(),
        "{}",
        String::from_utf8_lossy(&sim.stderr)
    );

    let after = run(&["emergency", "status", "--json"]);
    assert_eq!(after.code, 0, "{after:?}");
    let json: serde_json::Value = serde_json::from_str(&after.stdout).unwrap();
    assert_eq!(json["healthy"], true);
    assert_eq!(json["api"]["checks"]["database"], "ok");
    assert!(json["server"]["last_frame_at"].is_string(), "{json:#}");
    assert!(json["server"]["last_frame_age_seconds"].as_i64().unwrap() < 60);
    assert!(json["server"]["records_stored_total"].as_u64().unwrap() >= 20);
    let pids: Vec<u64> = json["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert!(pids.contains(&u64::from(pid)), "{json:#}");
    let text = run(&["emergency", "status"]);
    let last_frame = text
        .stdout
        .lines()
        .find(|l| l.starts_with("last frame"))
        .unwrap();
    assert!(
        last_frame.contains("Z (") && last_frame.ends_with(" s ago)"),
        "{last_frame}"
    );

    let logs = run(&["emergency", "logs", "--output", "bundle.tar.gz"]);
    assert_eq!(logs.code, 0, "{logs:?}");
    assert_eq!(
        PathBuf::from(logs.last_line()),
        cwd.join("bundle.tar.gz").canonicalize().unwrap()
    );
    let entries = bundle(&cwd.join("bundle.tar.gz"));
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    for name in [
        "status.txt",
        "status.json",
        "config.txt",
        "metrics.txt",
        "ready.json",
        "log/svoi.log",
        "log/svoi.out",
        "system.txt",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    assert!(entry(&entries, "status.txt").contains("last frame   20"));
    assert!(serde_json::from_str::<serde_json::Value>(entry(&entries, "status.json")).is_ok());
    assert!(entry(&entries, "config.txt").contains("db = \"sqlite:./data/ops.db\""));
    assert!(entry(&entries, "metrics.txt").contains("svoi_records_stored_total"));
    let ready: serde_json::Value = serde_json::from_str(entry(&entries, "ready.json")).unwrap();
    assert_eq!(ready["ready"], true);
    assert!(entry(&entries, "log/svoi.log").contains("svoi serving devices"));
    assert!(entry(&entries, "system.txt").contains("cpus:"));

    let incident = run(&[
        "incident",
        "new",
        "--title",
        "Frames stopped at depot #7",
        "--dir",
        "incidents",
    ]);
    assert_eq!(incident.code, 0, "{incident:?}");
    let path = cwd.join(incident.last_line());
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.ends_with("-frames-stopped-at-depot-7.md") && name.len() == 11 + 28,
        "{name}"
    );
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.contains("Frames stopped at depot #7"), "{written}");
    assert!(written.contains("svoi status at "), "{written}");
    assert!(written.contains("HEALTHY"), "{written}");
    assert!(
        written.contains(&name[..name.len() - 3]),
        "the id: {written}"
    );
    assert!(!written.contains("{{"), "{written}");

    let again = run(&["service", "start"]);
    assert_eq!(again.code, 1, "{again:?}");
    assert!(again.stdout.contains("already running"), "{again:?}");
    assert!(alive(pid));

    let stop = run(&["service", "stop"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert!(stop.stdout.contains("stopped"), "{stop:?}");
    assert!(!pid_file.exists());
    assert!(!alive(pid), "the server process is gone");
    let status = svoi(cwd, &["service", "status"]);
    assert_eq!(status.code, 1, "{status:?}");
    assert!(status.stdout.contains("not running"), "{status:?}");
    let stop = svoi(cwd, &["service", "stop"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert!(stop.stdout.contains("not running"), "{stop:?}");
}

#[test]
fn service_stop_and_status_handle_stale_pid_files() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let pid_file = cwd.join("run/svoi.pid");
    std::fs::create_dir_all(cwd.join("run")).unwrap();
    fn args(action: &str) -> [&str; 4] {
        ["service", action, "--pid-file", "run/svoi.pid"]
    }

    // A process that has exited.
    let mut gone = Command::new("sleep").arg("0").spawn().unwrap();
    gone.wait().unwrap();
    std::fs::write(&pid_file, format!("{}\n", gone.id())).unwrap();
    let status = svoi(cwd, &args("status"));
    assert_eq!(status.code, 1, "{status:?}");
    assert!(status.stdout.contains("stale"), "{status:?}");
    assert!(pid_file.exists(), "status only reports");
    let stop = svoi(cwd, &args("stop"));
    assert_eq!(stop.code, 0, "{stop:?}");
    assert!(stop.stdout.contains("stale"), "{stop:?}");
    assert!(!pid_file.exists());

    // A pid that now belongs to another program: never signalled.
    let mut other = Command::new("sleep").arg("60").spawn().unwrap();
    let _reaper = Reaper(Some(other.id()));
    std::fs::write(&pid_file, format!("{}\n", other.id())).unwrap();
    let status = svoi(cwd, &args("status"));
    assert_eq!(status.code, 1, "{status:?}");
    assert!(status.stdout.contains("not svoi serve"), "{status:?}");
    let stop = svoi(cwd, &args("stop"));
    assert_eq!(stop.code, 0, "{stop:?}");
    assert!(stop.stdout.contains("stale"), "{stop:?}");
    assert!(!pid_file.exists());
    assert!(
        other.try_wait().unwrap().is_none(),
        "sleep was not signalled"
    );
    other.kill().unwrap();
    other.wait().unwrap();

    // Not a pid at all.
    std::fs::write(&pid_file, "garbage\n").unwrap();
    let stop = svoi(cwd, &args("stop"));
    assert_eq!(stop.code, 0, "{stop:?}");
    assert!(!pid_file.exists());

    // No pid file.
    let status = svoi(cwd, &args("status"));
    assert_eq!(status.code, 1, "{status:?}");
    assert!(status.stdout.contains("no pid file"), "{status:?}");
}

#[test]
fn service_start_reports_a_server_that_exits_before_it_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    // The device port is taken, so `svoi serve` exits at once.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api = free_addr();
    std::fs::write(
        cwd.join("svoi.toml"),
        format!(
            "[ingest]\nlisten = \"{}\"\n[api]\nlisten = \"{api}\"\n",
            taken.local_addr().unwrap()
        ),
    )
    .unwrap();
    let start = svoi(
        cwd,
        &[
            "--config",
            "svoi.toml",
            "service",
            "start",
            "--pid-file",
            "s/svoi.pid",
        ],
    );
    assert_eq!(start.code, 1, "{start:?}");
    assert!(start.stderr.contains("exited"), "{start:?}");
    assert!(
        start.stderr.contains("ingest.listen"),
        "the tail of svoi.out: {start:?}"
    );
    assert!(!cwd.join("s/svoi.pid").exists());
    assert!(cwd.join("s/svoi.out").is_file());
}

#[test]
fn emergency_status_with_the_api_down_still_prints_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    config(cwd);
    let status = svoi(cwd, &["--config", "svoi.toml", "emergency", "status"]);
    assert_eq!(status.code, 1, "{status:?}");
    for part in [
        "NOT HEALTHY",
        "api          API unreachable: ",
        "connections  unknown",
        "process      ",
        "disk         ./data: ",
        "host         memory ",
        "errors       log.file not set",
    ] {
        assert!(
            status.stdout.contains(part),
            "{part:?} in\n{}",
            status.stdout
        );
    }
    let json = svoi(
        cwd,
        &["--config", "svoi.toml", "emergency", "status", "--json"],
    );
    assert_eq!(json.code, 1, "{json:?}");
    let json: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(json["healthy"], false);
    assert!(json["api"]["unreachable"].is_string());
    assert!(json["memory"]["total_bytes"].as_u64().unwrap() > 0);
}

#[test]
fn emergency_logs_never_contain_the_database_password() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    // Logs that leaked the password (as written and percent-decoded) must not leak it further.
    std::fs::write(
        cwd.join("svoi.log"),
        "2026-01-01T00:00:00Z ERROR svoi: connect postgres://svoi:Tr0ub4dor%26x@db/svoi\n",
    )
    .unwrap();
    std::fs::create_dir_all(cwd.join("data")).unwrap();
    std::fs::write(cwd.join("data/svoi.out"), "password Tr0ub4dor&x\n").unwrap();
    let api = format!("http://{}", free_addr());
    let logs = svoi_in(
        cwd,
        &[
            "--db",
            "postgres://svoi:Tr0ub4dor%26x@127.0.0.1:1/svoi",
            "emergency",
            "logs",
            "--api",
            &api,
        ],
        &[("SVOI_LOG_FILE", "svoi.log")],
        Duration::from_secs(60),
    );
    assert_eq!(logs.code, 0, "{logs:?}");
    let path = PathBuf::from(logs.last_line());
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("svoi-emergency-") && name.ends_with("Z.tar.gz") && name.len() == 38,
        "{name}"
    );
    assert_eq!(path.parent().unwrap(), cwd.canonicalize().unwrap());
    let entries = bundle(&path);
    assert!(entries.len() >= 8, "{entries:?}");
    for (name, text) in &entries {
        assert!(!text.contains("Tr0ub4dor"), "password in {name}:\n{text}");
    }
    assert!(entry(&entries, "config.txt").contains("postgres://svoi:***@127.0.0.1:1/svoi"));
    assert!(entry(&entries, "log/svoi.log").contains("svoi:***@db"));
    assert!(entry(&entries, "log/svoi.out").contains("password ***"));
    assert!(entry(&entries, "metrics.txt").contains("could not be read"));
    assert!(entry(&entries, "status.txt").contains("API unreachable"));
}

#[test]
fn incident_new_never_overwrites_and_refuses_titles_without_letters() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    config(cwd);
    let new = |title: &str| {
        svoi(
            cwd,
            &[
                "--config",
                "svoi.toml",
                "incident",
                "new",
                "--title",
                title,
                "--dir",
                "inc",
            ],
        )
    };
    let first = new("DB slow");
    assert_eq!(first.code, 0, "{first:?}");
    assert!(first.last_line().ends_with("-db-slow.md"), "{first:?}");
    let second = new("DB slow!");
    assert_eq!(second.code, 0, "{second:?}");
    assert!(second.last_line().ends_with("-db-slow-2.md"), "{second:?}");
    let text = std::fs::read_to_string(cwd.join(second.last_line())).unwrap();
    assert!(text.contains("API unreachable"), "{text}");
    assert!(!text.contains("{{"), "{text}");
    let none = new("Нет кадров");
    assert_eq!(none.code, 2, "{none:?}");
    assert_eq!(std::fs::read_dir(cwd.join("inc")).unwrap().count(), 2);
}
