//! One device connection: read bytes, frame and decode them with the codec's session, archive
//! every message through the writer queue, and answer each message — answers that say "saved"
//! only after the writer's receipt covers the frame.
//!
//! Messages of one connection are handled in order and one at a time: a device sends its next
//! data only after the answer, and keeping the order keeps answers in order. While a frame
//! waits for room in the queue the socket is not read (backpressure) and nothing is dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use svoi_proto::{Body, Message, Session, SessionConfig, Step};
use svoi_store::LayoutKey;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::IngestConfig;
use crate::ack::{self, Planned, ReplyWriter};
use crate::convert;
use crate::names;
use crate::stats::IngestStats;
use crate::writer::{Job, Queue};

/// Shared by every session of a server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: IngestConfig,
    pub stats: Arc<IngestStats>,
    pub seq: std::sync::atomic::AtomicU64,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    Eof,
    Idle,
    HandshakeTimeout,
    SyncLost,
    Shutdown,
    Io,
    CommitFailed,
}

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Eof => "peer closed",
            End::Idle => "idle timeout",
            End::HandshakeTimeout => "no handshake in time",
            End::SyncLost => "sync lost",
            End::Shutdown => "server shutdown",
            End::Io => "i/o error",
            End::CommitFailed => "commit failed",
        }
    }
}

struct Conn {
    conn_id: u64,
    session: Session,
    imei: Option<Arc<str>>,
    layout: Option<Arc<LayoutKey>>,
    shared: Arc<Shared>,
    queue: Queue,
}

/// Runs one connection to its end.
pub(crate) async fn run(
    stream: TcpStream,
    conn_id: u64,
    shared: Arc<Shared>,
    queue: Queue,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, wr) = stream.into_split();
    let mut writer = ReplyWriter::new(wr);
    let max_frame = shared.config.max_message_bytes;
    let mut conn = Conn {
        conn_id,
        session: Session::new(SessionConfig { max_frame }),
        imei: None,
        layout: None,
        shared,
        queue,
    };
    let started = tokio::time::Instant::now();
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    let mut start = 0usize;
    let end = 'conn: loop {
        // Everything complete in the buffer first.
        loop {
            match conn.session.decode(&buf[start..]) {
                Step::NeedMore => break,
                Step::Message(m) => {
                    let bytes = buf[start..start + m.len].to_vec();
                    start += m.len;
                    if let Some(end) = conn.handle(m, bytes, &mut writer).await {
                        break 'conn end;
                    }
                }
            }
        }
        if start > 0 {
            buf.drain(..start);
            start = 0;
        }
        let timeout = if conn.imei.is_none() {
            let hs = conn.shared.config.handshake_timeout;
            hs.saturating_sub(started.elapsed())
        } else {
            conn.shared.config.idle_timeout
        };
        // Make room for a full read without letting one connection hold more than a frame.
        buf.reserve(8 * 1024);
        let read = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break End::Shutdown,
            r = tokio::time::timeout(timeout, rd.read_buf(&mut buf)) => r,
        };
        match read {
            Err(_) if conn.imei.is_none() => break End::HandshakeTimeout,
            Err(_) => break End::Idle,
            Ok(Ok(0)) => {
                // The device closed. A partial message left behind is archived as what it is.
                if let Some(m) = conn.session.decode_eof(&buf) {
                    let bytes = buf[..m.len].to_vec();
                    let _ = conn.handle(m, bytes, &mut writer).await;
                }
                break End::Eof;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                debug!(error = %e, "read failed");
                break End::Io;
            }
        }
    };
    let _ = writer.shutdown().await;
    if let Some(imei) = &conn.imei {
        conn.shared.stats.device_offline(imei);
    }
    match end {
        End::SyncLost | End::CommitFailed => warn!(reason = end.as_str(), "session closed"),
        _ => info!(reason = end.as_str(), "session closed"),
    }
}

impl Conn {
    /// Archives one message and answers it. Returns why the session must end, if it must.
    async fn handle(
        &mut self,
        m: Message,
        bytes: Vec<u8>,
        writer: &mut ReplyWriter<tokio::net::tcp::OwnedWriteHalf>,
    ) -> Option<End> {
        let now = SystemTime::now();
        let received = std::time::Instant::now();
        let stats = &self.shared.stats;
        stats.frame_received(now);
        if let Some(id) = self.session.identity()
            && self.imei.as_deref() != Some(id.imei.as_str())
        {
            let imei: Arc<str> = Arc::from(id.imei.as_str());
            tracing::Span::current().record("imei", &*imei);
            info!(imei = %imei, "device identified");
            if let Some(old) = &self.imei {
                stats.device_offline(old);
            }
            stats.device_online(&imei);
            self.imei = Some(imei);
        }
        if let Body::Ntcb(p) = &m.body
            && matches!(p.command, Some(svoi_proto::ntcb::Command::FlexRequest(_)))
        {
            self.layout = convert::layout_key(&self.session).map(Arc::new);
        }
        let d = convert::decoded(&m, &self.session, self.layout.as_ref());
        metrics::counter!(names::MESSAGES_RECEIVED, "type" => d.kind).increment(1);
        if let Some(e) = m.error() {
            stats.decode_errors.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(names::DECODE_ERRORS, "reason" => e.reason()).increment(1);
            warn!(kind = d.kind, reason = e.reason(), error = %e, len = m.len, "message rejected");
        }
        let seq = self.shared.seq.fetch_add(1, Ordering::Relaxed);
        let received_at_us = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        let frame = d.into_frame(
            seq,
            self.conn_id,
            self.imei.clone(),
            received_at_us,
            bytes,
            self.layout.clone(),
        );
        let planned = ack::plan(m.reply, seq);
        let (done, outcome) = match planned {
            Planned::AfterCommit(_) => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            _ => (None, None),
        };
        if self.queue.send(Job { frame, done }).await.is_err() {
            return Some(End::CommitFailed);
        }
        let sent = match planned {
            Planned::None => Ok(()),
            Planned::Immediate(i) => writer.send(i.encode()).await,
            Planned::AfterCommit(a) => {
                let receipt = match outcome {
                    Some(rx) => match rx.await {
                        Ok(Ok(r)) => r,
                        Ok(Err(e)) => {
                            warn!(error = %e, "not acknowledged");
                            return Some(End::CommitFailed);
                        }
                        Err(_) => return Some(End::CommitFailed),
                    },
                    None => return Some(End::CommitFailed),
                };
                match a.encode(&receipt) {
                    Ok(bytes) => {
                        let r = writer.send(bytes).await;
                        if r.is_ok() {
                            stats.acks_sent.fetch_add(1, Ordering::Relaxed);
                            metrics::histogram!(names::ACK_LATENCY)
                                .record(received.elapsed().as_secs_f64());
                        }
                        r
                    }
                    Err(e) => {
                        warn!(error = %e, "receipt mismatch; not acknowledged");
                        return Some(End::CommitFailed);
                    }
                }
            }
        };
        if sent.is_err() {
            return Some(End::Io);
        }
        if m.sync_lost() {
            stats.sync_losses.fetch_add(1, Ordering::Relaxed);
            return Some(End::SyncLost);
        }
        None
    }
}
