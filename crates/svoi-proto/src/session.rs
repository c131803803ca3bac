//! The stateful, sans-I/O decoder of one device connection (reference §3, §8, §9).
//!
//! A server appends what it reads to its own buffer and calls [`Session::decode`] until it
//! says [`Step::NeedMore`]; each [`Message`] tells how many bytes it used (the caller drains
//! them), what it decoded and which [`Reply`] the device expects. Nothing is copied while a
//! frame is incomplete: the session only looks at the caller's bytes.
//!
//! Before the handshake only NTCB is valid and anything else is skipped as `garbage` up to the
//! next `@NTC`. After it, a byte that starts no message, an unknown FLEX type or a telemetry
//! frame before negotiation means framing is lost: the session reports an error covering the
//! bytes up to the next plausible message start ([`Message::sync_lost`]); a server closes the
//! connection, the `svoi decode` tool goes on from there. How many bytes such an error covers
//! depends on how much the caller had buffered (it never looks past the buffer's end), so
//! unlike valid streams, lost-sync output is not independent of the chunking.

use std::sync::Arc;

use crate::error::DecodeError;
use crate::flex::{self, FlexMessage, FlexType};
use crate::mask::RecordLayout;
use crate::ntcb::{self, Command, HEADER_LEN, PREAMBLE, Packet};
use crate::reply::{NtcbReply, Reply};

/// Default largest frame a session accepts (the largest possible `~A` is 187 174 bytes).
pub const DEFAULT_MAX_FRAME: usize = 256 * 1024;

/// Session limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Largest frame accepted; a longer one loses sync.
    pub max_frame: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

/// Who the device said it is in `*>S`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The identifier after `*>S:` (the IMEI).
    pub imei: String,
    /// The device's NTCB id (IDs of the handshake).
    pub device_id: u32,
    /// The id the device addresses us with (IDr of the handshake).
    pub server_id: u32,
}

/// The agreed FLEX versions and record layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Negotiated {
    /// Protocol version.
    pub protocol_version: u8,
    /// Structure version.
    pub struct_version: u8,
    /// Number of mask bits.
    pub data_size: u8,
    /// The record layout every `~A`/`~T`/`~C` uses.
    pub layout: Arc<RecordLayout>,
}

/// What a message is.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// An NTCB packet.
    Ntcb(Packet),
    /// A FLEX message.
    Flex(FlexMessage),
    /// The one-byte FLEX keep-alive `0x7F`.
    Ping,
    /// Bytes skipped before the handshake.
    Garbage,
    /// Bytes that could not be framed: sync is lost.
    Error(DecodeError),
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Position of the first byte in the session's stream.
    pub offset: u64,
    /// Number of bytes the message used (the caller drains them).
    pub len: usize,
    /// What it is.
    pub body: Body,
    /// What the device expects in answer, if anything.
    pub reply: Option<Reply>,
}

impl Message {
    /// Why the message was rejected, if it was.
    pub fn error(&self) -> Option<&DecodeError> {
        match &self.body {
            Body::Ntcb(p) => p.error.as_ref(),
            Body::Flex(f) => f.error.as_ref(),
            Body::Error(e) => Some(e),
            Body::Ping | Body::Garbage => None,
        }
    }

    /// Framing was lost at this message: a server should close the connection.
    pub fn sync_lost(&self) -> bool {
        matches!(self.body, Body::Error(_))
    }
}

/// Result of one [`Session::decode`] call.
// A `Step` is matched right away and never stored, so boxing the message would only add an
// allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The buffer holds no complete message yet; nothing was used.
    NeedMore,
    /// A message; the caller drains `message.len` bytes.
    Message(Message),
}

/// The decoder state of one connection.
#[derive(Debug, Clone, Default)]
pub struct Session {
    config: SessionConfig,
    identity: Option<Identity>,
    negotiated: Option<Negotiated>,
    position: u64,
}

impl Session {
    /// A session for a new connection.
    pub fn new(config: SessionConfig) -> Self {
        Session {
            config,
            ..Session::default()
        }
    }

    /// The device identity once the handshake succeeded.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// The negotiated versions and layout, once `*>FLEX` was accepted.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Stream position of the next byte the session will decode.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Decodes the message at the start of `buf`.
    pub fn decode(&mut self, buf: &[u8]) -> Step {
        if buf.is_empty() {
            return Step::NeedMore;
        }
        if self.identity.is_none() {
            return match find_preamble(buf) {
                Some(0) => self.ntcb(buf),
                Some(p) => self.emit(p, Body::Garbage, None),
                None => {
                    let skip = buf.len() - partial_preamble_suffix(buf);
                    if skip > 0 && skip >= self.config.max_frame {
                        self.emit(skip, Body::Garbage, None)
                    } else {
                        Step::NeedMore
                    }
                }
            };
        }
        match buf[0] {
            b'@' => {
                let n = buf.len().min(4);
                if buf[..n] != PREAMBLE[..n] {
                    self.lost(buf, DecodeError::BadPreamble)
                } else {
                    self.ntcb(buf)
                }
            }
            b'~' => self.flex(buf),
            0x7F => self.emit(1, Body::Ping, None),
            b => self.lost(buf, DecodeError::OutOfSync(b)),
        }
    }

    /// Decodes what is left at the end of the input: like [`Session::decode`], but bytes that
    /// can never complete a message are reported (as `garbage` before the handshake, as a
    /// truncated-message error after it) instead of waiting for more.
    pub fn decode_eof(&mut self, buf: &[u8]) -> Option<Message> {
        if buf.is_empty() {
            return None;
        }
        let step = match self.decode(buf) {
            Step::NeedMore if self.identity.is_none() && !buf.starts_with(&PREAMBLE) => {
                self.emit(buf.len(), Body::Garbage, None)
            }
            Step::NeedMore => self.emit(
                buf.len(),
                Body::Error(DecodeError::Truncated(buf.len())),
                None,
            ),
            step => step,
        };
        match step {
            Step::Message(m) => Some(m),
            Step::NeedMore => None,
        }
    }

    /// Decodes a complete capture: every message of `bytes` with the bytes it used, ending
    /// with what [`Session::decode_eof`] reports for an incomplete tail. For tools and tests;
    /// a server reading a socket calls [`Session::decode`] itself.
    pub fn messages<'s, 'b>(&'s mut self, bytes: &'b [u8]) -> Messages<'s, 'b> {
        Messages {
            session: self,
            rest: bytes,
        }
    }

    fn emit(&mut self, len: usize, body: Body, reply: Option<Reply>) -> Step {
        let offset = self.position;
        self.position += len as u64;
        Step::Message(Message {
            offset,
            len,
            body,
            reply,
        })
    }

    fn lost(&mut self, buf: &[u8], error: DecodeError) -> Step {
        let len = next_sync(buf, 1);
        self.emit(len, Body::Error(error), None)
    }

    fn ntcb(&mut self, buf: &[u8]) -> Step {
        if buf.len() < HEADER_LEN {
            return Step::NeedMore;
        }
        let total = HEADER_LEN + usize::from(u16::from_le_bytes([buf[12], buf[13]]));
        if total > self.config.max_frame {
            let limit = self.config.max_frame;
            return self.lost(buf, DecodeError::FrameTooLarge { len: total, limit });
        }
        if buf.len() < total {
            return Step::NeedMore;
        }
        let layout = self.negotiated.as_ref().map(|n| &n.layout);
        let mut packet = ntcb::decode_packet(&buf[..total], layout);
        let reply = self.apply(&mut packet);
        self.emit(total, Body::Ntcb(packet), reply)
    }

    /// Applies a packet's effect on the session and decides its answer.
    fn apply(&mut self, packet: &mut Packet) -> Option<Reply> {
        let h = packet.header;
        let answer = |body| {
            Some(Reply::Ntcb {
                receiver_id: h.sender_id,
                sender_id: h.receiver_id,
                body,
            })
        };
        match packet.command.as_ref()? {
            Command::Handshake { imei } => {
                self.identity = Some(Identity {
                    imei: imei.clone(),
                    device_id: h.sender_id,
                    server_id: h.receiver_id,
                });
                answer(NtcbReply::Handshake)
            }
            Command::FlexRequest(req) => {
                if self.identity.is_none() {
                    packet.error = Some(DecodeError::FlexBeforeHandshake);
                    return None;
                }
                self.negotiated = req.accepted().then(|| Negotiated {
                    protocol_version: req.protocol_version,
                    struct_version: req.struct_version,
                    data_size: req.data_size,
                    layout: Arc::clone(&req.layout),
                });
                answer(NtcbReply::Flex {
                    protocol_version: req.answer_protocol_version,
                    struct_version: req.answer_struct_version,
                })
            }
            Command::TmKey { .. } => answer(NtcbReply::TmKey),
            Command::Code { .. } => answer(NtcbReply::Code { mode: 0 }),
            Command::S2u { .. } => answer(NtcbReply::S2u { result: 0x31 }),
            Command::LegacyArchive { count, .. } => {
                answer(NtcbReply::LegacyArchive { count: *count })
            }
            Command::LegacyAlarm { index, .. } => answer(NtcbReply::LegacyAlarm { index: *index }),
            Command::KeepAlive
            | Command::FlexAnswer { .. }
            | Command::RecordAnswer { .. }
            | Command::Text { .. } => None,
        }
    }

    fn flex(&mut self, buf: &[u8]) -> Step {
        let layout = self.negotiated.as_ref().map(|n| &n.layout);
        match flex::frame_len(buf, layout.map(|l| l.record_size()), self.config.max_frame) {
            Err(e) => self.lost(buf, e),
            Ok(None) => Step::NeedMore,
            Ok(Some(n)) if buf.len() < n => Step::NeedMore,
            Ok(Some(n)) => {
                let message = flex::decode(&buf[..n], layout);
                let reply = message.reply();
                self.emit(n, Body::Flex(message), reply)
            }
        }
    }
}

/// Iterator over the messages of a complete capture, from [`Session::messages`].
#[derive(Debug)]
pub struct Messages<'s, 'b> {
    session: &'s mut Session,
    rest: &'b [u8],
}

impl<'b> Iterator for Messages<'_, 'b> {
    type Item = (Message, &'b [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let message = match self.session.decode(self.rest) {
            Step::Message(m) => m,
            Step::NeedMore => self.session.decode_eof(self.rest)?,
        };
        let (used, rest) = self.rest.split_at(message.len);
        self.rest = rest;
        Some((message, used))
    }
}

fn find_preamble(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == PREAMBLE)
}

/// Length of the longest strict prefix of `@NTC` that ends `buf`.
fn partial_preamble_suffix(buf: &[u8]) -> usize {
    (1..4)
        .rev()
        .find(|&k| buf.len() >= k && buf[buf.len() - k..] == PREAMBLE[..k])
        .unwrap_or(0)
}

/// The first position at or after `from` where a message could start: `@NTC`, `~` followed by
/// a known type letter, or a prefix of either that the end of the buffer cuts.
fn next_sync(buf: &[u8], from: usize) -> usize {
    (from..buf.len())
        .find(|&i| {
            let rest = &buf[i..];
            match rest[0] {
                b'@' => {
                    let n = rest.len().min(4);
                    rest[..n] == PREAMBLE[..n]
                }
                b'~' => rest
                    .get(1)
                    .is_none_or(|&t| FlexType::from_letter(t).is_some()),
                _ => false,
            }
        })
        .unwrap_or(buf.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_points() {
        assert_eq!(next_sync(b"xx@NTCyy", 1), 2);
        assert_eq!(next_sync(b"xx@NT", 1), 2);
        assert_eq!(next_sync(b"xx@NX~", 1), 5);
        assert_eq!(next_sync(b"~A~Q~T", 1), 4);
        assert_eq!(next_sync(b"abc", 1), 3);
        assert_eq!(partial_preamble_suffix(b"ab@N"), 2);
        assert_eq!(partial_preamble_suffix(b"ab@NTC"), 0);
    }

    #[test]
    fn garbage_waits_for_a_preamble_then_is_skipped_whole() {
        let mut s = Session::default();
        assert_eq!(s.decode(b"AT+\r\n@N"), Step::NeedMore);
        let Step::Message(m) = s.decode(b"AT+\r\n@NTC") else {
            panic!("expected garbage");
        };
        assert_eq!((m.len, &m.body), (5, &Body::Garbage));
        assert_eq!(s.position(), 5);
    }

    #[test]
    fn flex_before_handshake_is_garbage_and_after_it_loses_sync() {
        let mut s = Session::default();
        let m = s.decode_eof(b"~A\x01").unwrap_or_else(|| panic!("message"));
        assert_eq!(m.body, Body::Garbage);
        s.identity = Some(Identity {
            imei: "1".into(),
            device_id: 0,
            server_id: 1,
        });
        let m = s
            .decode_eof(b"~A\x01\x00~C")
            .unwrap_or_else(|| panic!("message"));
        assert_eq!(m.body, Body::Error(DecodeError::NotNegotiated('A')));
        assert_eq!(m.len, 4);
        assert!(m.sync_lost());
    }
}
