//! Which server is using a database: the lock file `svoi serve` holds on an SQLite database
//! (`<db>.serve.lock`, an advisory `flock` naming the holder's pid), and on PostgreSQL the
//! sessions whose `application_name` is [`SERVE_APPLICATION_NAME`].

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use super::{BackupError, io};
use crate::pg::wait;
use crate::{DbUrl, StoreOptions};

/// The `application_name` of `svoi serve`'s PostgreSQL connections
/// ([`crate::PgOptions::application_name`]).
pub const SERVE_APPLICATION_NAME: &str = "svoi serve";

/// The lock file of the SQLite database `db`: `<db>.serve.lock`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".serve.lock");
    PathBuf::from(name)
}

/// The lock a running server holds on its database for as long as it runs (released when
/// dropped, or when the process ends however it ends, since the kernel drops `flock` locks
/// with the last descriptor). On PostgreSQL it holds nothing: servers there are told apart
/// by their `application_name`, and several may share a database.
#[derive(Debug)]
pub struct ServerLock {
    /// The locked file (SQLite).
    file: Option<(File, PathBuf)>,
}

impl ServerLock {
    /// Takes the lock of the database at `url`: SQLite creates `<db>.serve.lock` (and the
    /// database's directory) when missing, locks it exclusively without waiting and writes
    /// this process's pid into it. Fails with [`BackupError::InUse`] naming the holder's pid
    /// when another process holds it. PostgreSQL: nothing to take.
    pub fn acquire(url: &DbUrl) -> Result<ServerLock, BackupError> {
        let DbUrl::Sqlite(db) = url else {
            return Ok(ServerLock { file: None });
        };
        let path = lock_path(db);
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(BackupError::InUse {
                    db: url.to_string(),
                    holder: holder(&mut file),
                    lock: path,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        file.set_len(0).map_err(io(&path))?;
        file.rewind().map_err(io(&path))?;
        writeln!(file, "{}", std::process::id()).map_err(io(&path))?;
        file.flush().map_err(io(&path))?;
        Ok(ServerLock {
            file: Some((file, path)),
        })
    }

    /// The lock file held (SQLite).
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(_, path)| path.as_path())
    }
}

/// `svoi serve (pid N)` from the lock file's content.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match text.trim().parse::<u32>() {
        Ok(pid) => format!("svoi serve (pid {pid})"),
        Err(_) => "svoi serve (pid unknown)".to_string(),
    }
}

/// Which server is using the database at `url`, if any: SQLite, the holder of its lock file
/// (`svoi serve (pid N)`); PostgreSQL, the sessions of this database whose application name is
/// [`SERVE_APPLICATION_NAME`] (`svoi serve (pid N from ADDR)`, the backend's pid, one per
/// server connection, joined by `, `). `None` when nothing is.
pub fn server_using(url: &DbUrl, opts: &StoreOptions) -> Result<Option<String>, BackupError> {
    match url {
        DbUrl::Sqlite(db) => {
            let path = lock_path(db);
            let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io(&path)(e)),
            };
            match file.try_lock_shared() {
                // Taken and released at once (dropping the file releases it).
                Ok(()) => Ok(None),
                Err(TryLockError::WouldBlock) => Ok(Some(holder(&mut file))),
                Err(TryLockError::Error(e)) => Err(io(&path)(e)),
            }
        }
        DbUrl::Postgres(pg) => {
            let client = match crate::pg::connect(pg, opts) {
                Ok(client) => client,
                Err(e) if super::pg::is_missing_database(&e) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let rows = wait(client.query(
                "SELECT pid, coalesce(host(client_addr), 'local socket')
                 FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = $1
                   AND pid <> pg_backend_pid()
                 ORDER BY backend_start",
                &[&SERVE_APPLICATION_NAME],
            ))?;
            if rows.is_empty() {
                return Ok(None);
            }
            let sessions: Vec<String> = rows
                .iter()
                .map(|row| {
                    let pid: i32 = row.get(0);
                    let from: String = row.get(1);
                    format!("svoi serve (backend pid {pid} from {from})")
                })
                .collect();
            Ok(Some(sessions.join(", ")))
        }
    }
}
