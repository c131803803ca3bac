//! The NTCB transport (reference §2.1, §4.2): the 16-byte header with its two XOR checksums,
//! packet encoding, and the classification of packet bodies into commands.

use std::sync::Arc;

use crate::checksum::xor8;
use crate::error::{DecodeError, EncodeError};
use crate::mask::{FieldMask, RecordLayout, bitfield_len};
use crate::record::Record;
use crate::version;

/// The only preamble this codec accepts (FLEX mode always uses it).
pub const PREAMBLE: [u8; 4] = *b"@NTC";
/// Size of the NTCB header.
pub const HEADER_LEN: usize = 16;

/// A parsed NTCB header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Receiver identifier (IDr).
    pub receiver_id: u32,
    /// Sender identifier (IDs).
    pub sender_id: u32,
    /// Body length n.
    pub length: u16,
    /// XOR of the body bytes as transmitted.
    pub csd: u8,
    /// XOR of header bytes 0..14 as transmitted.
    pub csp: u8,
}

impl Header {
    /// Parses the first 16 bytes of `b` (the caller has checked the length and preamble).
    pub fn parse(b: &[u8]) -> Header {
        Header {
            receiver_id: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            sender_id: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            length: u16::from_le_bytes([b[12], b[13]]),
            csd: b[14],
            csp: b[15],
        }
    }
}

/// Encodes an NTCB packet with both checksums.
pub fn encode_packet(
    receiver_id: u32,
    sender_id: u32,
    body: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    encode_packet_into(receiver_id, sender_id, body, &mut out)?;
    Ok(out)
}

/// Appends an NTCB packet with both checksums to `out`.
pub fn encode_packet_into(
    receiver_id: u32,
    sender_id: u32,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let n = u16::try_from(body.len()).map_err(|_| EncodeError::TooLong(body.len()))?;
    let start = out.len();
    out.extend_from_slice(&PREAMBLE);
    out.extend_from_slice(&receiver_id.to_le_bytes());
    out.extend_from_slice(&sender_id.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.push(xor8(body));
    let csp = xor8(&out[start..]);
    out.push(csp);
    out.extend_from_slice(body);
    Ok(())
}

/// A `*>FLEX` negotiation request and the answer it gets.
#[derive(Debug, Clone, PartialEq)]
pub struct FlexRequest {
    /// Protocol code (0xB0).
    pub protocol: u8,
    /// Requested protocol version.
    pub protocol_version: u8,
    /// Requested structure version.
    pub struct_version: u8,
    /// Number of mask bits.
    pub data_size: u8,
    /// The mask as transmitted.
    pub bitfield: Vec<u8>,
    /// The layout the mask describes.
    pub layout: Arc<RecordLayout>,
    /// Protocol version of our answer.
    pub answer_protocol_version: u8,
    /// Structure version of our answer.
    pub answer_struct_version: u8,
}

impl FlexRequest {
    /// Whether our answer equals the request, so the device starts sending with this mask.
    pub fn accepted(&self) -> bool {
        self.answer_protocol_version == self.protocol_version
            && self.answer_struct_version == self.struct_version
    }

    /// Parses the body after `*>FLEX` and decides the answer.
    pub fn parse(rest: &[u8]) -> Result<FlexRequest, DecodeError> {
        let [
            protocol,
            protocol_version,
            struct_version,
            data_size,
            bitfield @ ..,
        ] = rest
        else {
            return Err(DecodeError::FlexRequestTooShort(rest.len() + 6));
        };
        if *protocol != version::FLEX_PROTOCOL {
            return Err(DecodeError::UnknownProtocol(*protocol));
        }
        let need = bitfield_len(*data_size);
        if bitfield.len() != need {
            return Err(DecodeError::MaskLength {
                data_size: *data_size,
                got: bitfield.len(),
            });
        }
        let answer_protocol_version = version::best_supported(*protocol_version)
            .ok_or(DecodeError::UnsupportedVersion(*protocol_version))?;
        let answer_struct_version = version::best_supported(*struct_version)
            .ok_or(DecodeError::UnsupportedVersion(*struct_version))?;
        let mask = FieldMask::parse(*data_size, bitfield)?;
        Ok(FlexRequest {
            protocol: *protocol,
            protocol_version: *protocol_version,
            struct_version: *struct_version,
            data_size: *data_size,
            bitfield: bitfield.to_vec(),
            layout: Arc::new(RecordLayout::new(mask)?),
            answer_protocol_version,
            answer_struct_version,
        })
    }
}

/// What an NTCB body says.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// An empty packet (n = 0): link keep-alive, never answered.
    KeepAlive,
    /// `*>S:<id>`: the handshake.
    Handshake {
        /// The device identifier (the IMEI in practice).
        imei: String,
    },
    /// `*>FLEX`: negotiation.
    FlexRequest(FlexRequest),
    /// `*<FLEX`: a server's negotiation answer (seen when decoding the other direction).
    FlexAnswer {
        /// Protocol code.
        protocol: u8,
        /// Protocol version.
        protocol_version: u8,
        /// Structure version.
        struct_version: u8,
    },
    /// `*@C<record>` or `*#A<record>`: a command answer carrying one record.
    RecordAnswer {
        /// `"*@C"` or `"*#A"`.
        name: &'static str,
        /// The record.
        record: Record,
    },
    /// `*>TMKEY`: an unregistered Touch Memory key.
    TmKey {
        /// Bytes after `*>TMKEY` (time, `:`, key).
        data: Vec<u8>,
    },
    /// `*>CODE`: request to switch to encryption (refused: we answer mode 0).
    Code {
        /// Requested mode.
        mode: u8,
    },
    /// `*>S2U`: USB-to-server data.
    S2u {
        /// Bytes after `*>S2U`.
        data: Vec<u8>,
    },
    /// Legacy `*>A`: archive in a static pre-FLEX format.
    LegacyArchive {
        /// Record count (echoed in the answer).
        count: u8,
        /// Format code (0x25 = F5.2, 0x06 = F6).
        format: u8,
    },
    /// Legacy `*>T`: out-of-turn record in a static pre-FLEX format.
    LegacyAlarm {
        /// Format code (one byte, or a u16 when the first byte is 0).
        format: u16,
        /// Record index (echoed in the answer).
        index: u32,
    },
    /// Any other text: command answers `*@…`, query answers `*#…`, `*Z:`, server commands.
    Text {
        /// The first two characters (`"*@"`, `"*#"`, `"*!"`, `"*?"`, `"*<"` …).
        prefix: String,
        /// The whole body as text (bytes that are not UTF-8 are replaced).
        text: String,
    },
}

impl Command {
    /// The command name used in decoder output: `"*>S"`, `"*>FLEX"`, `"*@C"`, …, or the first
    /// two characters for other text; `None` for a keep-alive.
    pub fn name(&self) -> Option<&str> {
        Some(match self {
            Command::KeepAlive => return None,
            Command::Handshake { .. } => "*>S",
            Command::FlexRequest(_) => "*>FLEX",
            Command::FlexAnswer { .. } => "*<FLEX",
            Command::RecordAnswer { name, .. } => name,
            Command::TmKey { .. } => "*>TMKEY",
            Command::Code { .. } => "*>CODE",
            Command::S2u { .. } => "*>S2U",
            Command::LegacyArchive { .. } => "*>A",
            Command::LegacyAlarm { .. } => "*>T",
            Command::Text { prefix, .. } => prefix,
        })
    }
}

/// The name a body would have, for error output when the body cannot be parsed.
pub fn body_name(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    for known in ["*>FLEX", "*>S"] {
        if body.starts_with(known.as_bytes()) {
            return Some(known.to_string());
        }
    }
    Some(String::from_utf8_lossy(&body[..body.len().min(2)]).into_owned())
}

/// Classifies an NTCB body whose checksums are correct. `layout` is the negotiated record
/// layout, needed to recognise `*@C<record>`.
pub fn parse_body(body: &[u8], layout: Option<&Arc<RecordLayout>>) -> Result<Command, DecodeError> {
    if body.is_empty() {
        return Ok(Command::KeepAlive);
    }
    if let Some(rest) = body.strip_prefix(b"*>FLEX") {
        return FlexRequest::parse(rest).map(Command::FlexRequest);
    }
    if let Some(rest) = body.strip_prefix(b"*<FLEX") {
        let [protocol, protocol_version, struct_version] = rest else {
            return Err(DecodeError::BodyTooShort("*<FLEX"));
        };
        return Ok(Command::FlexAnswer {
            protocol: *protocol,
            protocol_version: *protocol_version,
            struct_version: *struct_version,
        });
    }
    if let Some(rest) = body.strip_prefix(b"*>TMKEY") {
        return Ok(Command::TmKey {
            data: rest.to_vec(),
        });
    }
    if let Some(rest) = body.strip_prefix(b"*>CODE") {
        let [mode, ..] = rest else {
            return Err(DecodeError::BodyTooShort("*>CODE"));
        };
        return Ok(Command::Code { mode: *mode });
    }
    if let Some(rest) = body.strip_prefix(b"*>S2U") {
        return Ok(Command::S2u {
            data: rest.to_vec(),
        });
    }
    if let Some(rest) = body.strip_prefix(b"*>S") {
        let id = rest.strip_prefix(b":").ok_or(DecodeError::BadIdentifier)?;
        if id.is_empty() || !id.iter().all(|b| b.is_ascii_graphic()) {
            return Err(DecodeError::BadIdentifier);
        }
        return Ok(Command::Handshake {
            imei: String::from_utf8_lossy(id).into_owned(),
        });
    }
    if let Some(rest) = body.strip_prefix(b"*>A") {
        let [count, format, ..] = rest else {
            return Err(DecodeError::BodyTooShort("*>A"));
        };
        return Ok(Command::LegacyArchive {
            count: *count,
            format: *format,
        });
    }
    if let Some(rest) = body.strip_prefix(b"*>T") {
        let (format, rest) = match rest {
            [0, lo, hi, tail @ ..] => (u16::from_le_bytes([*lo, *hi]), tail),
            [f, tail @ ..] => (u16::from(*f), tail),
            [] => return Err(DecodeError::BodyTooShort("*>T")),
        };
        let [a, b, c, d, ..] = rest else {
            return Err(DecodeError::BodyTooShort("*>T"));
        };
        return Ok(Command::LegacyAlarm {
            format,
            index: u32::from_le_bytes([*a, *b, *c, *d]),
        });
    }
    for name in ["*@C", "*#A"] {
        if let (Some(rest), Some(layout)) = (body.strip_prefix(name.as_bytes()), layout)
            && rest.len() == layout.record_size()
        {
            return Ok(Command::RecordAnswer {
                name,
                record: Record::decode(layout, rest),
            });
        }
    }
    Ok(Command::Text {
        prefix: String::from_utf8_lossy(&body[..body.len().min(2)]).into_owned(),
        text: String::from_utf8_lossy(body).into_owned(),
    })
}

/// A decoded NTCB packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    /// The header as transmitted.
    pub header: Header,
    /// CSp matches the header.
    pub header_ok: bool,
    /// CSd matches the body.
    pub body_ok: bool,
    /// The command, when the checksums matched and the body parsed.
    pub command: Option<Command>,
    /// Why the packet is rejected, if it is.
    pub error: Option<DecodeError>,
    /// Name of the command the body starts with, kept for a body that failed to parse.
    pub name: Option<String>,
}

impl Packet {
    /// Both checksums match.
    pub fn checksum_ok(&self) -> bool {
        self.header_ok && self.body_ok
    }
}

/// Checks both checksums of the complete packet `b` (header + body) and classifies the body.
pub fn decode_packet(b: &[u8], layout: Option<&Arc<RecordLayout>>) -> Packet {
    let header = Header::parse(b);
    let body = &b[HEADER_LEN..];
    let header_ok = xor8(&b[..HEADER_LEN - 1]) == header.csp;
    let body_ok = xor8(body) == header.csd;
    let (command, error) = if header_ok && body_ok {
        match parse_body(body, layout) {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, Some(DecodeError::NtcbChecksum))
    };
    Packet {
        header,
        header_ok,
        body_ok,
        name: if header_ok && body_ok {
            body_name(body)
        } else {
            None
        },
        command,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_reference_handshake_reply() {
        let out = encode_packet(0, 1, b"*<S").unwrap_or_default();
        assert_eq!(hex::encode(out), "404e544300000000010000000300455e2a3c53");
    }

    #[test]
    fn encodes_reference_setout_command() {
        let out = encode_packet(0, 1, b"*!SETOUT 1Y").unwrap_or_default();
        assert_eq!(
            hex::encode(out),
            "404e544300000000010000000b004f5c2a215345544f5554203159"
        );
    }

    #[test]
    fn too_long_body_is_refused() {
        assert_eq!(
            encode_packet(0, 1, &vec![0u8; 65536]),
            Err(EncodeError::TooLong(65536))
        );
    }

    #[test]
    fn record_answer_needs_exact_record_size() {
        let layout =
            Arc::new(RecordLayout::new(FieldMask::all_up_to(4)).unwrap_or_else(|e| panic!("{e}")));
        let mut body = b"*@C".to_vec();
        body.extend_from_slice(&[0u8; 11]);
        assert!(matches!(
            parse_body(&body, Some(&layout)),
            Ok(Command::RecordAnswer { .. })
        ));
        let text = parse_body(b"*@CNCT_DRC OK", Some(&layout));
        assert!(matches!(text, Ok(Command::Text { ref prefix, .. }) if prefix == "*@"));
    }

    #[test]
    fn handshake_identifier_must_be_printable() {
        assert_eq!(parse_body(b"*>S:", None), Err(DecodeError::BadIdentifier));
        assert_eq!(
            parse_body(b"*>S:12\x003", None),
            Err(DecodeError::BadIdentifier)
        );
        assert_eq!(parse_body(b"*>S", None), Err(DecodeError::BadIdentifier));
    }
}
