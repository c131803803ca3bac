//! FLEX messages (reference §2.2, §4.1, §8): computing a frame's length from its type and the
//! negotiated record size without looking at its CRC, and decoding a complete frame.

use std::sync::Arc;

use crate::checksum::crc8;
use crate::error::DecodeError;
use crate::mask::RecordLayout;
use crate::record::{ExtRecord, Record};
use crate::reply::Reply;

/// The FLEX message types this codec frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlexType {
    /// `~A`: archive records.
    Archive,
    /// `~T`: out-of-turn (alarm) record with event index.
    Alarm,
    /// `~C`: current state.
    Current,
    /// `~E`: additional records (FLEX 2.0+).
    ExtArchive,
    /// `~X`: additional out-of-turn record (FLEX 2.0+).
    ExtAlarm,
    /// `~N`: camera notification.
    Notification,
    /// `~P`: transparent data.
    Transparent,
    /// `~Z`: the device did not understand a server FLEX message.
    Unsupported,
}

impl FlexType {
    /// All types, for tests and listings.
    pub const ALL: [FlexType; 8] = [
        FlexType::Archive,
        FlexType::Alarm,
        FlexType::Current,
        FlexType::ExtArchive,
        FlexType::ExtAlarm,
        FlexType::Notification,
        FlexType::Transparent,
        FlexType::Unsupported,
    ];

    /// The type of letter `b`, if it is one we frame.
    pub fn from_letter(b: u8) -> Option<FlexType> {
        Some(match b {
            b'A' => FlexType::Archive,
            b'T' => FlexType::Alarm,
            b'C' => FlexType::Current,
            b'E' => FlexType::ExtArchive,
            b'X' => FlexType::ExtAlarm,
            b'N' => FlexType::Notification,
            b'P' => FlexType::Transparent,
            b'Z' => FlexType::Unsupported,
            _ => return None,
        })
    }

    /// The type letter.
    pub fn letter(self) -> u8 {
        match self {
            FlexType::Archive => b'A',
            FlexType::Alarm => b'T',
            FlexType::Current => b'C',
            FlexType::ExtArchive => b'E',
            FlexType::ExtAlarm => b'X',
            FlexType::Notification => b'N',
            FlexType::Transparent => b'P',
            FlexType::Unsupported => b'Z',
        }
    }

    /// `"~A"`, `"~T"`, ….
    pub fn name(self) -> &'static str {
        match self {
            FlexType::Archive => "~A",
            FlexType::Alarm => "~T",
            FlexType::Current => "~C",
            FlexType::ExtArchive => "~E",
            FlexType::ExtAlarm => "~X",
            FlexType::Notification => "~N",
            FlexType::Transparent => "~P",
            FlexType::Unsupported => "~Z",
        }
    }
}

/// The length of the FLEX frame at the start of `buf` (which starts with `~`): `Ok(None)` when
/// more bytes are needed to know it. `record_size` is R from the negotiation, `limit` the
/// largest frame accepted.
pub fn frame_len(
    buf: &[u8],
    record_size: Option<usize>,
    limit: usize,
) -> Result<Option<usize>, DecodeError> {
    let Some(&letter) = buf.get(1) else {
        return Ok(None);
    };
    let kind = FlexType::from_letter(letter).ok_or(DecodeError::UnknownFlexType(letter))?;
    let r = || record_size.ok_or(DecodeError::NotNegotiated(char::from(letter)));
    let total = match kind {
        FlexType::Archive => {
            let r = r()?;
            let Some(&count) = buf.get(2) else {
                return Ok(None);
            };
            3 + usize::from(count) * r + 1
        }
        FlexType::Alarm => 2 + 4 + r()? + 1,
        FlexType::Current => 2 + r()? + 1,
        FlexType::ExtArchive => {
            let Some(&count) = buf.get(2) else {
                return Ok(None);
            };
            let mut pos = 3;
            for _ in 0..count {
                let (Some(&lo), Some(&hi)) = (buf.get(pos), buf.get(pos + 1)) else {
                    return Ok(None);
                };
                pos += 2 + usize::from(u16::from_le_bytes([lo, hi]));
                if pos >= limit {
                    return Err(DecodeError::FrameTooLarge {
                        len: pos + 1,
                        limit,
                    });
                }
            }
            pos + 1
        }
        FlexType::ExtAlarm => {
            let (Some(&lo), Some(&hi)) = (buf.get(6), buf.get(7)) else {
                return Ok(None);
            };
            8 + usize::from(u16::from_le_bytes([lo, hi])) + 1
        }
        FlexType::Notification => 9,
        FlexType::Transparent => {
            let (Some(&lo), Some(&hi)) = (buf.get(4), buf.get(5)) else {
                return Ok(None);
            };
            6 + usize::from(u16::from_le_bytes([lo, hi])) + 1
        }
        FlexType::Unsupported => 6,
    };
    if total > limit {
        return Err(DecodeError::FrameTooLarge { len: total, limit });
    }
    Ok(Some(total))
}

/// What a FLEX message carries.
#[derive(Debug, Clone, PartialEq)]
pub enum FlexBody {
    /// `~A`.
    Archive {
        /// Record count from the header.
        count: u8,
        /// The records (empty when the CRC failed).
        records: Vec<Record>,
    },
    /// `~T`.
    Alarm {
        /// Event index from the header (what the reply echoes).
        event_index: u32,
        /// The record (absent when the CRC failed).
        record: Option<Record>,
    },
    /// `~C`.
    Current {
        /// The record (absent when the CRC failed).
        record: Option<Record>,
    },
    /// `~E`.
    ExtArchive {
        /// Record count from the header.
        count: u8,
        /// The additional records.
        records: Vec<ExtRecord>,
    },
    /// `~X`.
    ExtAlarm {
        /// Event index from the header.
        event_index: u32,
        /// The additional record.
        record: Option<ExtRecord>,
    },
    /// `~N`.
    Notification {
        /// Module code (0x80 camera).
        module: u8,
        /// Notification id.
        notification: u8,
        /// Time, Unix seconds.
        time: u32,
    },
    /// `~P`.
    Transparent {
        /// Module code.
        module: u8,
        /// Transfer id.
        put_id: u8,
        /// The data.
        data: Vec<u8>,
    },
    /// `~Z`.
    Unsupported {
        /// The two bytes after `~` of the server message the device rejected.
        rejected: [u8; 2],
    },
}

/// A decoded FLEX message.
#[derive(Debug, Clone, PartialEq)]
pub struct FlexMessage {
    /// Message type.
    pub kind: FlexType,
    /// CRC8 as transmitted.
    pub crc: u8,
    /// Whether the CRC8 matches.
    pub crc_ok: bool,
    /// The content.
    pub body: FlexBody,
    /// Why the message is rejected, if it is (then it is not acknowledged).
    pub error: Option<DecodeError>,
}

impl FlexMessage {
    /// The answer the device expects, or `None` when the message gets none (rejected, `~N`,
    /// `~Z`).
    pub fn reply(&self) -> Option<Reply> {
        if !self.crc_ok || self.error.is_some() {
            return None;
        }
        match self.body {
            FlexBody::Archive { count, .. } => Some(Reply::Archive { count }),
            FlexBody::Alarm { event_index, .. } => Some(Reply::Alarm { event_index }),
            FlexBody::Current { .. } => Some(Reply::Current),
            FlexBody::ExtArchive { count, .. } => Some(Reply::ExtArchive { count }),
            FlexBody::ExtAlarm { event_index, .. } => Some(Reply::ExtAlarm { event_index }),
            FlexBody::Transparent { module, put_id, .. } => {
                Some(Reply::TransparentAccepted { module, put_id })
            }
            FlexBody::Notification { .. } | FlexBody::Unsupported { .. } => None,
        }
    }

    /// Records of `~A`, `~T` and `~C`, in order.
    pub fn records(&self) -> &[Record] {
        match &self.body {
            FlexBody::Archive { records, .. } => records,
            FlexBody::Alarm { record, .. } | FlexBody::Current { record } => record.as_slice(),
            _ => &[],
        }
    }

    /// Additional records of `~E` and `~X`, in order.
    pub fn ext_records(&self) -> &[ExtRecord] {
        match &self.body {
            FlexBody::ExtArchive { records, .. } => records,
            FlexBody::ExtAlarm { record, .. } => record.as_slice(),
            _ => &[],
        }
    }
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Decodes a complete frame `f` whose length [`frame_len`] computed; `layout` is required for
/// `~A`, `~T` and `~C` (the framer has already refused them without one).
pub fn decode(f: &[u8], layout: Option<&Arc<RecordLayout>>) -> FlexMessage {
    let kind = FlexType::from_letter(f[1]).unwrap_or(FlexType::Unsupported);
    let crc = f[f.len() - 1];
    let crc_ok = crc8(&f[..f.len() - 1]) == crc;
    let payload = &f[2..f.len() - 1];
    let mut error = (!crc_ok).then_some(DecodeError::Crc8);
    let records = |bytes: &[u8], count: usize| -> Vec<Record> {
        match layout {
            Some(l) if crc_ok && l.record_size() > 0 => bytes
                .chunks_exact(l.record_size())
                .map(|r| Record::decode(l, r))
                .collect(),
            Some(l) if crc_ok => (0..count).map(|_| Record::decode(l, &[])).collect(),
            _ => Vec::new(),
        }
    };
    let body = match kind {
        FlexType::Archive => FlexBody::Archive {
            count: payload[0],
            records: records(&payload[1..], usize::from(payload[0])),
        },
        FlexType::Alarm => FlexBody::Alarm {
            event_index: le_u32(payload),
            record: records(&payload[4..], 1).pop(),
        },
        FlexType::Current => FlexBody::Current {
            record: records(payload, 1).pop(),
        },
        FlexType::ExtArchive => {
            let count = payload[0];
            let mut records = Vec::new();
            if crc_ok {
                let mut rest = &payload[1..];
                for _ in 0..count {
                    let size = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
                    match ExtRecord::decode(&rest[..2 + size]) {
                        Ok(r) => records.push(r),
                        Err(e) => {
                            error = Some(e);
                            records.clear();
                            break;
                        }
                    }
                    rest = &rest[2 + size..];
                }
            }
            FlexBody::ExtArchive { count, records }
        }
        FlexType::ExtAlarm => {
            let mut record = None;
            if crc_ok {
                match ExtRecord::decode(&payload[4..]) {
                    Ok(r) => record = Some(r),
                    Err(e) => error = Some(e),
                }
            }
            FlexBody::ExtAlarm {
                event_index: le_u32(payload),
                record,
            }
        }
        FlexType::Notification => FlexBody::Notification {
            module: payload[0],
            notification: payload[1],
            time: le_u32(&payload[2..]),
        },
        FlexType::Transparent => FlexBody::Transparent {
            module: payload[0],
            put_id: payload[1],
            data: payload[4..].to_vec(),
        },
        FlexType::Unsupported => FlexBody::Unsupported {
            rejected: [payload[1], payload[2]],
        },
    };
    FlexMessage {
        kind,
        crc,
        crc_ok,
        body,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_follow_the_reference_table() {
        let lim = 1 << 20;
        assert_eq!(frame_len(b"~", Some(14), lim), Ok(None));
        assert_eq!(frame_len(b"~A", Some(14), lim), Ok(None));
        assert_eq!(frame_len(b"~A\x02", Some(14), lim), Ok(Some(3 + 28 + 1)));
        assert_eq!(frame_len(b"~T", Some(14), lim), Ok(Some(2 + 4 + 14 + 1)));
        assert_eq!(frame_len(b"~C", Some(14), lim), Ok(Some(2 + 14 + 1)));
        assert_eq!(frame_len(b"~N", None, lim), Ok(Some(9)));
        assert_eq!(frame_len(b"~Z", None, lim), Ok(Some(6)));
        assert_eq!(frame_len(b"~P\x7f\x02\x05", None, lim), Ok(None));
        assert_eq!(frame_len(b"~P\x7f\x02\x05\x00", None, lim), Ok(Some(12)));
        assert_eq!(frame_len(b"~X\0\0\0\0\x27", None, lim), Ok(None));
        assert_eq!(frame_len(b"~X\0\0\0\0\x27\x00", None, lim), Ok(Some(48)));
        assert_eq!(frame_len(b"~E\x02\x27\x00", None, lim), Ok(None));
        let mut e = b"~E\x02\x27\x00".to_vec();
        e.extend_from_slice(&[0; 0x27]);
        e.extend_from_slice(&[0x27, 0]);
        assert_eq!(frame_len(&e, None, lim), Ok(Some(3 + 2 * 41 + 1)));
    }

    #[test]
    fn refusals() {
        assert_eq!(
            frame_len(b"~A\x01", None, 100),
            Err(DecodeError::NotNegotiated('A'))
        );
        assert_eq!(
            frame_len(b"~Q", None, 100),
            Err(DecodeError::UnknownFlexType(b'Q'))
        );
        assert_eq!(
            frame_len(b"~A\xff", Some(100), 1000),
            Err(DecodeError::FrameTooLarge {
                len: 3 + 25500 + 1,
                limit: 1000
            })
        );
    }
}
