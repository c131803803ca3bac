//! The PostgreSQL backend: connections (driven by one shared background runtime so that the
//! store's blocking interface works from any thread, async ones included), migrations, monthly
//! partitions, the batch commit ([`PgStore`]) and the read pool (`PgReader`).
//!
//! `tokio-postgres` splits a connection into a `Client`, whose futures only talk to the
//! connection over channels, and a `Connection` task doing the socket I/O. The connection tasks
//! run on a small runtime of our own; the store's methods wait for the client futures with
//! `futures_executor::block_on` on the caller's thread. This works inside and outside a Tokio
//! runtime, unlike the `postgres` crate's per-client `Runtime::block_on`.

mod migrate;
mod partition;
mod read;
pub(crate) mod reader;
mod reprocess;
mod tokens;
pub(crate) mod write;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio_postgres::{Client, NoTls};

pub(crate) use partition::Partitioned;

use crate::{CommitStats, FrameRow, LayoutKey, PgUrl, RecordRow, StoreError, StoreOptions};

/// The runtime the connection tasks run on, built once. Built inside `get_or_init`, so that
/// threads racing to the first connection never build a second runtime only to drop it (a
/// runtime dropped on an async thread panics).
fn runtime() -> Result<&'static tokio::runtime::Runtime, StoreError> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    let built = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("svoi-postgres")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    });
    built.as_ref().map_err(|e| StoreError::Io {
        path: "postgres runtime".into(),
        source: std::io::Error::other(e.clone()),
    })
}

/// Waits for a client future on the calling thread.
pub(crate) fn wait<F: Future>(future: F) -> F::Output {
    futures_executor::block_on(future)
}

/// Opens a connection: connect timeout, keepalives and application name from `opts`, the
/// connection task spawned on the shared runtime, then the session settings every SVOI
/// connection runs with (UTC, the statement timeout, `synchronous_commit = on`, so that a
/// commit the store reports is on the server's disk whatever the server's default says, and
/// no NOTICEs such as "relation already exists, skipping" in the server's log).
pub(crate) fn connect(url: &PgUrl, opts: &StoreOptions) -> Result<Client, StoreError> {
    let mut config = url.config()?;
    config
        .connect_timeout(opts.postgres.connect_timeout)
        .keepalives(true)
        .keepalives_idle(std::time::Duration::from_secs(30));
    if let Some(name) = &opts.postgres.application_name {
        config.application_name(name);
    } else if config.get_application_name().is_none() {
        config.application_name("svoi");
    }
    let rt = runtime()?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let result = match config.connect(NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(async move {
                    // The error, if any, reaches the client as a closed connection.
                    let _ = connection.await;
                });
                Ok(client)
            }
            Err(e) => Err(e),
        };
        let _ = tx.send(result);
    });
    let client = rx.recv().map_err(|_| StoreError::Io {
        path: "postgres runtime".into(),
        source: std::io::Error::other("the postgres runtime stopped"),
    })??;
    let timeout_ms = opts.postgres.statement_timeout.as_millis().max(1);
    wait(client.batch_execute(&format!(
        "SET TIME ZONE 'UTC'; SET synchronous_commit = on; SET statement_timeout = {timeout_ms}; \
         SET client_min_messages = warning"
    )))?;
    Ok(client)
}

/// The writer's handle on a PostgreSQL database: one connection, reopened after it breaks, and
/// in-memory caches of device and layout ids and of the partitions known to exist.
pub(crate) struct PgStore {
    url: PgUrl,
    opts: StoreOptions,
    client: Option<Client>,
    /// IMEI → `devices.id`. Cleared on rollback: a rolled-back insert's id does not exist.
    pub(crate) devices: HashMap<Arc<str>, i64>,
    /// Layout → `layouts.id`. Cleared on rollback, like `devices`.
    pub(crate) layouts: HashMap<Arc<LayoutKey>, i64>,
    /// Monthly partitions known to exist.
    pub(crate) partitions: HashSet<(Partitioned, i64)>,
    /// Statements prepared on the current connection.
    pub(crate) prepared: write::Prepared,
    /// `svoi_state.restore_epoch` when the caches were last known good: a restore bumps it,
    /// and a transaction that finds another value clears the caches first.
    epoch: i64,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects, applies the embedded migrations (serialised across servers by an advisory
    /// lock) and creates the partitions of this month, the previous one and the next
    /// [`partition::AHEAD`].
    pub(crate) fn open(url: &PgUrl, opts: &StoreOptions) -> Result<PgStore, StoreError> {
        let mut client = connect(url, opts)?;
        migrate::migrate(&mut client)?;
        let epoch = restore_epoch(&client)?;
        let mut store = PgStore {
            url: url.clone(),
            opts: opts.clone(),
            client: Some(client),
            devices: HashMap::new(),
            layouts: HashMap::new(),
            partitions: HashSet::new(),
            prepared: write::Prepared::new(),
            epoch,
        };
        store.ensure_partitions_ahead()?;
        Ok(store)
    }

    /// The URL this store writes to.
    pub(crate) fn url(&self) -> &PgUrl {
        &self.url
    }

    /// The connection, reconnecting when there is none or it broke. A new connection forgets
    /// the caches (ids and partitions may have changed while it was away).
    pub(crate) fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            self.devices.clear();
            self.layouts.clear();
            self.partitions.clear();
            self.prepared.clear();
            self.client = Some(connect(&self.url, &self.opts)?);
        }
        match self.client.as_mut() {
            Some(client) => Ok(client),
            None => unreachable!("connected above"),
        }
    }

    /// [`crate::Store::commit`] after validation: partitions first (each in a short
    /// transaction of its own), then the batch in one transaction.
    pub(crate) fn write(&mut self, frames: &[FrameRow]) -> Result<CommitStats, StoreError> {
        self.ensure_partitions_for(frames)?;
        self.in_transaction(|tx, caches| write::write_batch(tx, caches, frames))
    }

    /// [`crate::Store::insert_records_direct_many`]: one binary `COPY`.
    pub(crate) fn insert_records_direct_many(
        &mut self,
        devices: &[(&str, &[RecordRow])],
    ) -> Result<u64, StoreError> {
        let now = crate::rows::now_us();
        let mut seen = partition::Months::default();
        let months: std::collections::BTreeSet<i64> = devices
            .iter()
            .flat_map(|(_, rows)| rows.iter().filter_map(|r| r.event_time))
            .filter_map(|t| seen.of(t))
            .collect();
        self.ensure_partitions_ahead()?;
        for month in months {
            self.ensure_partition(Partitioned::Records, month)?;
        }
        self.in_transaction(|tx, caches| write::copy_records(tx, caches, devices, now))
    }

    /// The applied schema version.
    pub(crate) fn schema_version(&mut self) -> Result<u32, StoreError> {
        migrate::current_version(self.client()?)
    }

    /// Runs `work` in a transaction; on error it is rolled back and the id caches are cleared,
    /// since ids handed out inside it no longer exist.
    pub(crate) fn in_transaction<T>(
        &mut self,
        work: impl FnOnce(
            &mut tokio_postgres::Transaction<'_>,
            &mut Caches<'_>,
        ) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.client()?;
        let PgStore {
            client: slot,
            devices,
            layouts,
            prepared,
            opts,
            partitions,
            epoch,
            ..
        } = self;
        let Some(client) = slot.as_mut() else {
            return Err(StoreError::Invalid("no connection".to_owned()));
        };
        let result = (|| {
            let mut tx = wait(client.transaction())?;
            // Before any id is resolved: a restore since the caches were filled (the epoch
            // moved) left them naming rows, partitions and plans of the old contents.
            let found = cached_restore_epoch(&tx, prepared)?;
            if found != *epoch {
                devices.clear();
                layouts.clear();
                partitions.clear();
                prepared.clear();
                *epoch = found;
            }
            let mut caches = Caches {
                devices,
                layouts,
                prepared,
                records_via: opts.postgres.records_via,
            };
            let value = work(&mut tx, &mut caches)?;
            wait(tx.commit())?;
            Ok(value)
        })();
        if result.is_err() {
            self.devices.clear();
            self.layouts.clear();
        }
        if let Err(e) = &result {
            self.forget_broken(e);
        }
        result
    }

    /// Drops the connection after a retryable error, so that the next call reconnects: the
    /// session may be gone (a server-side kill reaches the client as an error response
    /// before the connection reads as closed), and a fresh session costs little next to
    /// failing once more on a dead one.
    pub(crate) fn forget_broken(&mut self, e: &StoreError) {
        if e.is_retryable() {
            self.client = None;
        }
    }
}

/// Reads `svoi_state.restore_epoch` (bumped by every restore).
const RESTORE_EPOCH: &str = "SELECT value FROM svoi_state WHERE name = 'restore_epoch'";

/// `svoi_state.restore_epoch`.
fn restore_epoch(client: &impl tokio_postgres::GenericClient) -> Result<i64, StoreError> {
    Ok(wait(client.query_one(RESTORE_EPOCH, &[]))?.try_get(0)?)
}

/// [`restore_epoch`] inside a commit, its statement prepared once per connection (one round
/// trip per commit).
fn cached_restore_epoch(
    tx: &tokio_postgres::Transaction<'_>,
    prepared: &mut write::Prepared,
) -> Result<i64, StoreError> {
    let stmt = match prepared.get(RESTORE_EPOCH) {
        Some(stmt) => stmt.clone(),
        None => {
            let stmt = wait(tx.prepare(RESTORE_EPOCH))?;
            prepared.insert(RESTORE_EPOCH, stmt.clone());
            stmt
        }
    };
    Ok(wait(tx.query_one(&stmt, &[]))?.try_get(0)?)
}

/// The id caches a transaction may add to.
pub(crate) struct Caches<'a> {
    /// IMEI → `devices.id`.
    pub(crate) devices: &'a mut HashMap<Arc<str>, i64>,
    /// Layout → `layouts.id`.
    pub(crate) layouts: &'a mut HashMap<Arc<LayoutKey>, i64>,
    /// Statements prepared on this connection.
    pub(crate) prepared: &'a mut write::Prepared,
    /// How commits write records.
    pub(crate) records_via: crate::RecordsVia,
}

/// Creates the database `name` on the server of `url` (connecting to `url`'s own database),
/// and returns its URL: for scratch databases (benchmarks, restore checks). Needs the
/// CREATEDB privilege.
pub fn create_database(url: &PgUrl, name: &str, opts: &StoreOptions) -> Result<PgUrl, StoreError> {
    check_name(name)?;
    let client = connect(url, opts)?;
    wait(client.batch_execute(&format!("CREATE DATABASE \"{name}\"")))?;
    Ok(url.with_dbname(name))
}

/// Drops the database `name` on the server of `url`, closing its connections; no error when
/// there is none.
pub fn drop_database(url: &PgUrl, name: &str, opts: &StoreOptions) -> Result<(), StoreError> {
    check_name(name)?;
    let client = connect(url, opts)?;
    wait(client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))?;
    Ok(())
}

/// A database name we create or drop: letters, digits and `_` only, so it needs no quoting.
fn check_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty()
        || name.len() > 63
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(StoreError::Invalid(format!(
            "database name {name:?}: use 1 to 63 letters, digits and underscores"
        )));
    }
    Ok(())
}
