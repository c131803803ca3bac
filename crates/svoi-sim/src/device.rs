//! One simulated tracker: connects, identifies itself (`*>S`), negotiates its FLEX mask,
//! sends `~A` batches, `~T` and `~C` records, checks every reply byte for byte, and after any
//! failure reconnects and resends whatever was not acknowledged, as a real device does.
//!
//! A device has one message in flight at a time and keeps only counters and the index of its
//! first unacknowledged record; record bytes are regenerated from the profile when needed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use svoi_proto::encode;
use svoi_proto::mask::RecordLayout;
use svoi_proto::reply::{NtcbReply, Reply};
use svoi_proto::{EncodeError, version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::profile::{DeviceProfile, device_profile};
use crate::stats::{DeviceStats, ErrorLog, LatencyHistogram};
use crate::{Ack, SimConfig};

/// Shortest and longest pause before a reconnect.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// What every device of a run shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub cfg: SimConfig,
    pub acks: Option<mpsc::Sender<Ack>>,
    pub latency: LatencyHistogram,
    pub errors: ErrorLog,
    pub stop: CancellationToken,
    pub started: Instant,
}

/// Why a connection was abandoned.
#[derive(Debug, thiserror::Error)]
enum DeviceError {
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {0} timed out")]
    ConnectTimeout(SocketAddr),
    #[error("sending {what} failed: {source}")]
    Send {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("sending {what} timed out")]
    SendTimeout { what: &'static str },
    #[error("no reply to {what} within {timeout:?}")]
    ReplyTimeout {
        what: &'static str,
        timeout: Duration,
    },
    #[error("connection closed while waiting for the reply to {what}")]
    Closed { what: &'static str },
    #[error("reading the reply to {what} failed: {source}")]
    Read {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("reply to {what} does not match: expected {expected}, got {got}")]
    Mismatch {
        what: &'static str,
        expected: String,
        got: String,
    },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: EncodeError,
    },
}

const HANDSHAKE: &str = "*>S handshake";
const NEGOTIATION: &str = "*>FLEX negotiation";
const ARCHIVE: &str = "~A";
const ALARM: &str = "~T";
const CURRENT: &str = "~C";

/// The next message a device sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Every record acknowledged and no `~C` due.
    Done,
    /// A `~C` is due.
    Current,
    /// The next record goes out as a `~T`.
    Alarm,
    /// The next records go out as a `~A`.
    Archive,
}

/// Runs device `number` until it has every record acknowledged, gives up, or the run stops;
/// returns its counters.
pub(crate) async fn run(shared: Arc<Shared>, number: usize) -> DeviceStats {
    let profile = device_profile(&shared.cfg, number);
    let span = tracing::debug_span!("device", imei = %profile.imei);
    let layout = match profile.layout() {
        Ok(layout) => layout,
        Err(e) => {
            shared
                .errors
                .record(&profile.imei, format!("cannot lay out the field set: {e}"));
            return DeviceStats::default();
        }
    };
    let templates = match crate::templates::Templates::new(&profile, &layout) {
        Ok(t) => t,
        Err(e) => {
            shared.errors.record(
                &profile.imei,
                format!("cannot encode the device's records: {e}"),
            );
            return DeviceStats::default();
        }
    };
    let mut device = Device {
        shared: &shared,
        profile,
        layout,
        stats: DeviceStats::default(),
        acked: 0,
        sent_high: 0,
        current_done_at: 0,
        failing_since: None,
        failures: 0,
        scratch: Vec::new(),
        reply: Vec::new(),
        templates,
    };
    tokio::select! {
        biased;
        () = shared.stop.cancelled() => {}
        () = device.drive().instrument(span) => {}
    }
    device.stats
}

struct Device<'a> {
    shared: &'a Shared,
    profile: DeviceProfile,
    layout: RecordLayout,
    stats: DeviceStats,
    /// Records acknowledged so far; also the index of the first unacknowledged record.
    acked: u64,
    /// One past the highest record index ever sent: records below it are resends.
    sent_high: u64,
    /// The value of `acked` when the last `~C` was acknowledged.
    current_done_at: u64,
    /// When the current run of failures began; cleared by any acknowledgement.
    failing_since: Option<Instant>,
    /// Consecutive failures, for the backoff.
    failures: u32,
    scratch: Vec<u8>,
    reply: Vec<u8>,
    /// Encoded records the archive and alarm records are made from.
    templates: crate::templates::Templates,
}

impl Device<'_> {
    fn cfg(&self) -> &SimConfig {
        &self.shared.cfg
    }

    async fn drive(&mut self) {
        let mut first = true;
        loop {
            if !first {
                self.stats.reconnects += 1;
            }
            first = false;
            let result = match self.connect().await {
                Ok(mut stream) => self.session(&mut stream).await,
                Err(e) => Err(e),
            };
            let error = match result {
                Ok(()) => {
                    self.stats.completed = true;
                    tracing::debug!("every record acknowledged");
                    return;
                }
                Err(e) => e,
            };
            if matches!(error, DeviceError::Mismatch { .. }) {
                self.stats.reply_mismatches += 1;
            }
            tracing::debug!(%error, "connection failed");
            self.shared
                .errors
                .record(&self.profile.imei, error.to_string());
            let now = Instant::now();
            let since = *self.failing_since.get_or_insert(now);
            let reconnect_for = self.cfg().reconnect_for;
            if now.duration_since(since) >= reconnect_for {
                self.shared.errors.record(
                    &self.profile.imei,
                    format!(
                        "gave up after {reconnect_for:?} of failed connections ({} of {} records acknowledged)",
                        self.acked,
                        self.cfg().records
                    ),
                );
                return;
            }
            let backoff = BACKOFF_MIN
                .saturating_mul(1 << self.failures.min(3))
                .min(BACKOFF_MAX);
            self.failures += 1;
            sleep(backoff).await;
        }
    }

    async fn connect(&self) -> Result<TcpStream, DeviceError> {
        let addr = self.cfg().addr;
        let stream = timeout(self.cfg().reply_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| DeviceError::ConnectTimeout(addr))?
            .map_err(|source| DeviceError::Connect { addr, source })?;
        // Latency matters more than packet count; failing to set it changes nothing else.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// One connection: handshake, negotiation, then data until every record is acknowledged.
    async fn session(&mut self, stream: &mut TcpStream) -> Result<(), DeviceError> {
        let p = &self.profile;
        let (device_id, server_id) = (p.device_id, p.server_id);
        let hello = encode::handshake(device_id, server_id, &p.imei).map_err(|source| {
            DeviceError::Encode {
                what: HANDSHAKE,
                source,
            }
        })?;
        let answer = |body| {
            Reply::Ntcb {
                receiver_id: device_id,
                sender_id: server_id,
                body,
            }
            .to_bytes()
        };
        self.exchange(stream, &hello, &answer(NtcbReply::Handshake), HANDSHAKE)
            .await?;

        let p = &self.profile;
        let flex = encode::flex_request(
            device_id,
            server_id,
            p.protocol_version,
            p.struct_version,
            p.data_size,
            &p.mask(),
        )
        .map_err(|source| DeviceError::Encode {
            what: NEGOTIATION,
            source,
        })?;
        // The device starts sending only when the answer echoes its versions; `run` admits
        // only supported versions, which a conforming server echoes.
        let expected = answer(NtcbReply::Flex {
            protocol_version: version::best_supported(p.protocol_version)
                .unwrap_or(p.protocol_version),
            struct_version: version::best_supported(p.struct_version).unwrap_or(p.struct_version),
        });
        self.exchange(stream, &flex, &expected, NEGOTIATION).await?;

        loop {
            match self.next() {
                Next::Done => return Ok(()),
                Next::Current => self.send_current(stream).await?,
                Next::Alarm => self.send_alarm(stream).await?,
                Next::Archive => self.send_archive(stream).await?,
            }
        }
    }

    fn next(&self) -> Next {
        let cfg = self.cfg();
        if let Some(k) = cfg.current_every
            && self.acked > 0
            && self.acked.is_multiple_of(k)
            && self.current_done_at != self.acked
        {
            return Next::Current;
        }
        if self.acked >= cfg.records {
            Next::Done
        } else if cfg
            .alarm_every
            .is_some_and(|k| self.acked % k.saturating_add(1) == k)
        {
            Next::Alarm
        } else {
            Next::Archive
        }
    }

    /// Waits until record `index` exists under the rate ceiling: record k is created
    /// `k / rate` seconds after the run started, as a device's black box fills.
    async fn wait_for_record(&self, index: u64) {
        if let Some(rate) = self.cfg().rate {
            let at = Duration::try_from_secs_f64(index as f64 / rate)
                .ok()
                .and_then(|d| self.shared.started.checked_add(d));
            match at {
                Some(at) => sleep_until(at).await,
                // Beyond any clock: the record is never made; the run's stop ends the wait.
                None => std::future::pending().await,
            }
        }
    }

    /// Records that exist now under the rate ceiling (all of them without one).
    fn records_available(&self) -> u64 {
        let cfg = self.cfg();
        match cfg.rate {
            None => cfg.records,
            Some(rate) => {
                let made = (self.shared.started.elapsed().as_secs_f64() * rate) as u64 + 1;
                made.min(cfg.records)
            }
        }
    }

    fn note_sent(&mut self, first: u64, count: u64) {
        self.stats.records_sent += count;
        self.stats.records_resent += self.sent_high.min(first + count).saturating_sub(first);
        self.sent_high = self.sent_high.max(first + count);
    }

    async fn send_archive(&mut self, stream: &mut TcpStream) -> Result<(), DeviceError> {
        let first = self.acked;
        self.wait_for_record(first).await;
        let cfg = self.cfg();
        let mut count = u64::from(cfg.batch)
            .min(cfg.records - first)
            .min(self.records_available().saturating_sub(first).max(1));
        if let Some(k) = cfg.alarm_every {
            // Stop before the next out-of-turn record (`first` itself is not one).
            count = count.min(k - first % k.saturating_add(1));
        }
        if let Some(k) = cfg.current_every {
            // Stop at the next `~C`.
            count = count.min(k - first % k);
        }
        self.scratch.clear();
        for index in first..first + count {
            // Indices are below `records` <= 2^32 (checked by `run`).
            self.templates
                .write(&self.profile, index as u32, &mut self.scratch);
        }
        let records: Vec<&[u8]> = self
            .scratch
            .chunks_exact(self.layout.record_size())
            .collect();
        let message = encode::archive(&records).map_err(|source| DeviceError::Encode {
            what: ARCHIVE,
            source,
        })?;
        // count <= batch <= 255.
        let expected = Reply::Archive { count: count as u8 }.to_bytes();
        self.note_sent(first, count);
        self.exchange(stream, &message, &expected, ARCHIVE).await?;
        self.acknowledged(first, count).await;
        Ok(())
    }

    async fn send_alarm(&mut self, stream: &mut TcpStream) -> Result<(), DeviceError> {
        let index = self.acked;
        self.wait_for_record(index).await;
        // Indices are below `records` <= 2^32 (checked by `run`).
        let event_index = index as u32;
        self.scratch.clear();
        self.templates
            .write(&self.profile, event_index, &mut self.scratch);
        let message = encode::alarm(event_index, &self.scratch);
        let expected = Reply::Alarm { event_index }.to_bytes();
        self.note_sent(index, 1);
        self.exchange(stream, &message, &expected, ALARM).await?;
        self.stats.alarms_acked += 1;
        self.acknowledged(index, 1).await;
        Ok(())
    }

    async fn send_current(&mut self, stream: &mut TcpStream) -> Result<(), DeviceError> {
        self.scratch.clear();
        // `acked` <= records <= 2^32; the current record after the very last one is the only
        // case where it does not fit, and `run` keeps start_time + records within u32.
        let values = self.profile.current_values(self.acked as u32);
        encode::record(&self.layout, &values, &mut self.scratch).map_err(|source| {
            DeviceError::Encode {
                what: CURRENT,
                source,
            }
        })?;
        let message = encode::current(&self.scratch);
        self.exchange(stream, &message, &Reply::Current.to_bytes(), CURRENT)
            .await?;
        self.stats.currents_acked += 1;
        self.current_done_at = self.acked;
        self.progress();
        Ok(())
    }

    /// Records `first..first + count` were acknowledged.
    async fn acknowledged(&mut self, first: u64, count: u64) {
        self.stats.records_acked += count;
        self.acked = first + count;
        self.progress();
        let Some(acks) = &self.shared.acks else {
            return;
        };
        for index in first..first + count {
            let record_index = index as u32;
            let ack = Ack {
                imei: self.profile.imei.clone(),
                record_index,
                event_time: self.profile.event_time(record_index),
                position: self.templates.fix(record_index),
            };
            if acks.send(ack).await.is_err() {
                self.shared.errors.record(
                    &self.profile.imei,
                    "the acknowledgement receiver was closed".to_string(),
                );
                return;
            }
        }
    }

    /// An acknowledgement arrived: the link works again.
    fn progress(&mut self) {
        self.failing_since = None;
        self.failures = 0;
    }

    /// Sends `message`, reads exactly `expected.len()` bytes and compares them. The latency
    /// of data messages (send complete to reply read) goes into the histogram.
    async fn exchange(
        &mut self,
        stream: &mut TcpStream,
        message: &[u8],
        expected: &[u8],
        what: &'static str,
    ) -> Result<(), DeviceError> {
        let limit = self.cfg().reply_timeout;
        timeout(limit, stream.write_all(message))
            .await
            .map_err(|_| DeviceError::SendTimeout { what })?
            .map_err(|source| DeviceError::Send { what, source })?;
        let sent = Instant::now();
        self.reply.clear();
        self.reply.resize(expected.len(), 0);
        match timeout(limit, stream.read_exact(&mut self.reply)).await {
            Err(_) => {
                return Err(DeviceError::ReplyTimeout {
                    what,
                    timeout: limit,
                });
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(DeviceError::Closed { what });
            }
            Ok(Err(source)) => return Err(DeviceError::Read { what, source }),
            Ok(Ok(_)) => {}
        }
        let latency = sent.elapsed();
        if self.reply != expected {
            return Err(DeviceError::Mismatch {
                what,
                expected: hex(expected),
                got: hex(&self.reply),
            });
        }
        if what != HANDSHAKE && what != NEGOTIATION {
            self.shared.latency.record(latency);
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
