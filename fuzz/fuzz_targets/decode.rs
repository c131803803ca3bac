//! Fuzz target `decode`: owns the libFuzzer harness that feeds arbitrary device → server byte
//! streams to [`svoi_proto::Session`] and checks the framing invariants every server relies on.
//!
//! Input layout (every missing byte reads as 0):
//!
//! * byte 0, mode: bits 0-1 choose the stream — `0` the raw input into a fresh session, `1` a
//!   valid handshake + `*>FLEX` negotiation prefix (versions and mask taken from the input)
//!   followed by the raw rest, `2`/`3` the same prefix followed by frames built with the
//!   encoders from the rest (valid CRCs, so record decoding is reached); bit 2 feeds the stream
//!   in chunks as a server reading a socket would (and, with the default limits, checks that
//!   chunking does not change what is decoded before sync is lost); bit 3 uses a small
//!   `max_frame`.
//! * with bit 2: one byte `n`, then `(n & 7) + 1` chunk sizes (each byte + 1, used in a cycle);
//! * with bit 3: one byte, `max_frame = 64 + 8 * byte`;
//! * with a prefix: device id byte, version selector (`% 4`: FLEX 1.0 / 2.0 / 3.0 with their
//!   full `data_size`, or `3` = three raw bytes protocol version, struct version, data_size),
//!   then `ceil(data_size / 8)` mask bytes;
//! * the rest: raw stream bytes, or encoder operations (see [`structured`]).
//!
//! Invariants: every message has `len >= 1`, fits the buffer, starts where the previous one
//! ended (offsets contiguous, [`Session::position`] agrees), the lengths add up to the stream
//! length; `NeedMore` consumes nothing; an acknowledged message carries no error; JSON and reply
//! encoding never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use svoi_proto::checksum::crc8;
use svoi_proto::mask::bitfield_len;
use svoi_proto::{FieldMask, Message, RecordLayout, Session, SessionConfig, Step, encode, json};

/// A cursor over the fuzz input; reads past the end give zeros / empty slices.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    fn take_padded(&mut self, n: usize) -> Vec<u8> {
        let mut v = self.take(n).to_vec();
        v.resize(n, 0);
        v
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// What one decoded message looked like, for comparing two decodings of the same stream.
#[derive(Debug, PartialEq)]
struct Seen {
    offset: u64,
    len: usize,
    sync_lost: bool,
    error: Option<String>,
    json: String,
}

/// Checks one message against the stream position and the buffer it was decoded from, and
/// exercises JSON and reply encoding.
fn check(session: &Session, m: &Message, buf: &[u8], consumed: u64) -> Seen {
    assert!(m.len >= 1, "empty message at {}: {m:?}", m.offset);
    assert!(
        m.len <= buf.len(),
        "message of {} bytes from a buffer of {}",
        m.len,
        buf.len()
    );
    assert_eq!(m.offset, consumed, "offsets not contiguous: {m:?}");
    assert_eq!(session.position(), m.offset + m.len as u64);
    let bytes = &buf[..m.len];
    let j = json::message(m, bytes);
    assert!(j["kind"].is_string(), "no kind in {j}");
    if let Some(reply) = m.reply.map(|r| r.to_bytes()) {
        assert!(!reply.is_empty());
        assert!(
            m.error().is_none(),
            "a rejected message is acknowledged: {m:?}"
        );
    }
    Seen {
        offset: m.offset,
        len: m.len,
        sync_lost: m.sync_lost(),
        error: m.error().map(ToString::to_string),
        json: j.to_string(),
    }
}

/// Decodes the whole stream from one buffer, as `svoi decode` does.
fn one_shot(config: SessionConfig, stream: &[u8]) -> Vec<Seen> {
    let mut session = Session::new(config);
    let mut seen = Vec::new();
    let mut rest = stream;
    let mut consumed = 0u64;
    loop {
        let before = session.position();
        let m = match session.decode(rest) {
            Step::Message(m) => m,
            Step::NeedMore => {
                assert_eq!(session.position(), before, "NeedMore moved the stream");
                match session.decode_eof(rest) {
                    Some(m) => m,
                    None => break,
                }
            }
        };
        seen.push(check(&session, &m, rest, consumed));
        consumed += m.len as u64;
        rest = &rest[m.len..];
    }
    assert!(rest.is_empty(), "{} bytes never decoded", rest.len());
    assert_eq!(consumed, stream.len() as u64, "lengths do not add up");
    seen
}

/// Decodes the stream as a server reading a socket: append a chunk, decode until `NeedMore`,
/// drain what was used, repeat; `decode_eof` once the input ends.
fn chunked(config: SessionConfig, stream: &[u8], sizes: &[usize]) -> Vec<Seen> {
    let mut session = Session::new(config);
    let mut seen = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut pending = stream;
    let mut consumed = 0u64;
    let mut sizes = sizes.iter().cycle();
    while !pending.is_empty() {
        let n = sizes.next().copied().unwrap_or(1).min(pending.len());
        buf.extend_from_slice(&pending[..n]);
        pending = &pending[n..];
        loop {
            let before = session.position();
            match session.decode(&buf) {
                Step::Message(m) => {
                    seen.push(check(&session, &m, &buf, consumed));
                    consumed += m.len as u64;
                    buf.drain(..m.len);
                }
                Step::NeedMore => {
                    assert_eq!(session.position(), before, "NeedMore moved the stream");
                    break;
                }
            }
        }
    }
    while let Some(m) = session.decode_eof(&buf) {
        seen.push(check(&session, &m, &buf, consumed));
        consumed += m.len as u64;
        buf.drain(..m.len);
    }
    assert!(buf.is_empty(), "{} bytes never decoded", buf.len());
    assert_eq!(consumed, stream.len() as u64, "lengths do not add up");
    seen
}

/// Up to the first message that loses sync (after which a server closes the connection and
/// the extent of the skipped bytes depends on what was buffered), chunked and one-shot
/// decoding must agree exactly.
fn same_until_sync_lost(a: &[Seen], b: &[Seen]) {
    for (x, y) in a.iter().zip(b) {
        if x.sync_lost || y.sync_lost {
            assert_eq!(
                (x.offset, x.sync_lost, &x.error),
                (y.offset, y.sync_lost, &y.error),
                "sync lost differently"
            );
            return;
        }
        assert_eq!(x, y, "chunking changed a message");
    }
    assert_eq!(a.len(), b.len(), "chunking changed the message count");
}

/// The negotiation prefix; returns the stream so far and the record size R of the mask.
fn prefix(input: &mut Input<'_>) -> Option<(Vec<u8>, usize, u32)> {
    let device_id = u32::from(input.byte());
    let (pv, sv, data_size) = match input.byte() % 4 {
        0 => (0x0A, 0x0A, 69),
        1 => (0x14, 0x14, 122),
        2 => (0x1E, 0x1E, 255),
        _ => (input.byte(), input.byte(), input.byte()),
    };
    let bits = input.take_padded(bitfield_len(data_size));
    let mask = FieldMask::parse(data_size, &bits).ok()?;
    let record_size = RecordLayout::new(mask).ok()?.record_size();
    let mut stream = encode::handshake(device_id, 1, "868345031234567").ok()?;
    stream.extend(encode::flex_request(device_id, 1, pv, sv, data_size, &mask).ok()?);
    Some((stream, record_size, device_id))
}

/// An additional record (`size` + bytes): well-formed (version 1.0 static part, a few dynamic
/// items) or raw bytes behind a consistent size.
fn ext_record(input: &mut Input<'_>, out: &mut Vec<u8>) {
    let flags = input.byte();
    let mut body = Vec::new();
    if flags & 1 == 1 {
        let l = 37 + usize::from((flags >> 1) & 3);
        body.push(0x0A);
        body.push(l as u8);
        body.extend(input.take_padded(l));
        for _ in 0..(flags >> 3) % 4 {
            let kind = input.byte();
            let len = usize::from(input.byte() % 16);
            body.push(kind);
            body.push(len as u8);
            body.extend(input.take_padded(len));
        }
    } else {
        let len = usize::from(input.byte());
        body.extend(input.take_padded(len));
    }
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend(body);
}

/// NTCB command prefixes the session gives a meaning to.
const COMMANDS: [&[u8]; 12] = [
    b"", b"*>S:", b"*>S", b"*>FLEX", b"*<FLEX", b"*@C", b"*#A", b"*>A", b"*>T", b"*>TMKEY",
    b"*>CODE", b"*>S2U",
];

/// Frames built with the encoders from the input, one operation byte each, so CRCs and
/// checksums are right and decoding goes past them.
fn structured(input: &mut Input<'_>, r: usize, device_id: u32, out: &mut Vec<u8>) {
    while !input.is_empty() {
        match input.byte() % 12 {
            0 => {
                let count = input.byte() % 6;
                let records: Vec<Vec<u8>> = (0..count).map(|_| input.take_padded(r)).collect();
                out.extend(encode::archive(&records).unwrap_or_default());
            }
            1 => {
                let index = input.u32();
                out.extend(encode::alarm(index, &input.take_padded(r)));
            }
            2 => out.extend(encode::current(&input.take_padded(r))),
            3 => {
                let count = input.byte() % 4;
                let mut f = vec![b'~', b'E', count];
                for _ in 0..count {
                    ext_record(input, &mut f);
                }
                f.push(crc8(&f));
                out.extend(f);
            }
            4 => {
                let mut f = vec![b'~', b'X'];
                f.extend_from_slice(&input.u32().to_le_bytes());
                ext_record(input, &mut f);
                f.push(crc8(&f));
                out.extend(f);
            }
            5 => {
                let (module, id) = (input.byte(), input.byte());
                out.extend(encode::notification(module, id, input.u32()));
            }
            6 => {
                let (module, put_id) = (input.byte(), input.byte());
                let len = usize::from(input.byte());
                let data = input.take_padded(len);
                out.extend(encode::transparent(module, put_id, &data).unwrap_or_default());
            }
            7 => out.extend(encode::unsupported([input.byte(), input.byte()])),
            8 => out.push(encode::PING),
            9 => {
                let mut body = COMMANDS[usize::from(input.byte()) % COMMANDS.len()].to_vec();
                let len = usize::from(input.byte());
                body.extend_from_slice(input.take(len));
                out.extend(encode::ntcb(device_id, 1, &body).unwrap_or_default());
            }
            10 => out.extend(
                encode::record_answer(device_id, 1, &input.take_padded(r)).unwrap_or_default(),
            ),
            _ => {
                let len = usize::from(input.byte() % 32);
                out.extend_from_slice(input.take(len));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input { data };
    let mode = input.byte();
    let sizes: Vec<usize> = if mode & 4 != 0 {
        let n = usize::from(input.byte() & 7) + 1;
        input
            .take_padded(n)
            .iter()
            .map(|&s| usize::from(s) + 1)
            .collect()
    } else {
        Vec::new()
    };
    let config = if mode & 8 != 0 {
        SessionConfig {
            max_frame: 64 + 8 * usize::from(input.byte()),
        }
    } else {
        SessionConfig::default()
    };
    let stream = match mode & 3 {
        0 => input.data.to_vec(),
        kind => {
            let Some((mut stream, r, device_id)) = prefix(&mut input) else {
                return;
            };
            if kind == 1 {
                stream.extend_from_slice(input.data);
            } else {
                structured(&mut input, r, device_id, &mut stream);
            }
            stream
        }
    };
    let whole = one_shot(config, &stream);
    if !sizes.is_empty() {
        let parts = chunked(config, &stream, &sizes);
        if config == SessionConfig::default() {
            same_until_sync_lost(&whole, &parts);
        }
    }
});
