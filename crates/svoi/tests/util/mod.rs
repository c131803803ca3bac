//! Helpers shared by the integration tests that drive the built `svoi` binary: free ports,
//! `svoi serve` as a child process, signals, and `svoi sim`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod maintenance;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_svoi");

pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// `svoi serve` in `cwd`, no config file and no `SVOI_*` variables, logging to `log`.
pub fn serve(cwd: &Path, db: Option<&str>, addr: SocketAddr, log: &Path) -> Child {
    serve_with(cwd, db, addr, log, &[])
}

/// [`serve`] with some `SVOI_*` variables set. The API listens on a port of its own choosing
/// (tests run in parallel; the default 8080 would collide).
pub fn serve_with(
    cwd: &Path,
    db: Option<&str>,
    addr: SocketAddr,
    log: &Path,
    env: &[(&str, &str)],
) -> Child {
    serve_api(cwd, db, addr, "127.0.0.1:0".parse().unwrap(), log, env)
}

/// `svoi serve` with the device listener on `addr` and the API on `api`.
pub fn serve_api(
    cwd: &Path,
    db: Option<&str>,
    addr: SocketAddr,
    api: SocketAddr,
    log: &Path,
    env: &[(&str, &str)],
) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd)
        .arg("serve")
        .args(["--listen", &addr.to_string()])
        .args(["--api-listen", &api.to_string()]);
    if let Some(db) = db {
        cmd.args(["--db", db]);
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("SVOI_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("svoi serve starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    for a in [addr, api] {
        if a.port() == 0 {
            continue;
        }
        while TcpStream::connect(a).is_err() {
            assert!(
                Instant::now() < deadline,
                "svoi serve did not listen on {a}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    child
}

pub fn sigterm(child: &mut Child) -> ExitStatus {
    // The shell's builtin `kill`: no dependency on a procps binary.
    let ok = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(ok.success());
    wait_for(child, Duration::from_secs(30))
}

pub fn wait_for(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The JSON report `svoi sim --json` printed; panics with its stderr when there is none.
pub fn sim_report(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "sim printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `svoi token create --name NAME` (read scope) on database `db`: the token it prints last.
pub fn create_token(db: &str, name: &str) -> String {
    let out = Command::new(BIN)
        .args(["--db", db, "token", "create", "--name", name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().last().unwrap().trim().to_owned()
}

/// A blocking HTTP client that returns 4xx and 5xx answers instead of failing on them.
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// GET `url` with an optional bearer token: the status and the body text, or status 0 and
/// the error when no answer came (connection refused, timeout).
pub fn get(agent: &ureq::Agent, url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = agent.get(url);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            (status, resp.body_mut().read_to_string().unwrap())
        }
        Err(e) => (0, e.to_string()),
    }
}

pub fn sim(addr: SocketAddr, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["sim", "--addr", &addr.to_string(), "--json"])
        .args(extra);
    cmd
}
