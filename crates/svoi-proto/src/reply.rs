//! The server's answers (reference §4): what each device message is acknowledged with, as a
//! value the server can hold until the message's data is durably stored, then encode.

use crate::checksum::{crc8, xor8};
use crate::ntcb::PREAMBLE;

/// The body of an NTCB answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NtcbReply {
    /// `*<S`: handshake accepted.
    Handshake,
    /// `*<FLEX` 0xB0 pv sv: negotiation answer.
    Flex {
        /// Protocol version we answer with.
        protocol_version: u8,
        /// Structure version we answer with.
        struct_version: u8,
    },
    /// `*<TMKEY`: Touch Memory key received.
    TmKey,
    /// `*<CODE` mode: encryption answer (0 = refused).
    Code {
        /// Echoed mode to accept, 0 to refuse.
        mode: u8,
    },
    /// `*<S2U` result (0x31 ok, 0x34 error).
    S2u {
        /// Result code.
        result: u8,
    },
    /// `*<A` count: legacy archive acknowledged.
    LegacyArchive {
        /// Echoed record count.
        count: u8,
    },
    /// `*<T` index: legacy out-of-turn record acknowledged.
    LegacyAlarm {
        /// Echoed record index.
        index: u32,
    },
}

/// An answer to one device message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// An NTCB packet; the identifiers are already swapped relative to the request.
    Ntcb {
        /// IDr of the answer (the request's IDs).
        receiver_id: u32,
        /// IDs of the answer (the request's IDr).
        sender_id: u32,
        /// What the answer says.
        body: NtcbReply,
    },
    /// `~A` count: archive records stored.
    Archive {
        /// Echoed record count.
        count: u8,
    },
    /// `~T` event index: out-of-turn record stored.
    Alarm {
        /// Echoed event index from the message header.
        event_index: u32,
    },
    /// `~C`: current state received (always `7E 43 B9`).
    Current,
    /// `~E` count: additional records stored.
    ExtArchive {
        /// Echoed record count.
        count: u8,
    },
    /// `~X` event index: additional out-of-turn record stored.
    ExtAlarm {
        /// Echoed event index.
        event_index: u32,
    },
    /// `~M` module put_id: transparent data accepted.
    TransparentAccepted {
        /// Module code.
        module: u8,
        /// Transfer id.
        put_id: u8,
    },
}

impl Reply {
    /// Whether the answer tells the device its data is saved, so it may only go out after the
    /// message's data is durably stored. Handshake, negotiation and refusals carry no data.
    pub fn needs_commit(&self) -> bool {
        match self {
            Reply::Ntcb { body, .. } => matches!(
                body,
                NtcbReply::TmKey
                    | NtcbReply::S2u { .. }
                    | NtcbReply::LegacyArchive { .. }
                    | NtcbReply::LegacyAlarm { .. }
            ),
            _ => true,
        }
    }

    /// Appends the answer's bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut body = [0u8; 16];
        let flex = |out: &mut Vec<u8>, bytes: &[u8]| {
            out.extend_from_slice(bytes);
            out.push(crc8(bytes));
        };
        match *self {
            Reply::Ntcb {
                receiver_id,
                sender_id,
                body: reply,
            } => {
                let n = match reply {
                    NtcbReply::Handshake => put(&mut body, &[b"*<S"]),
                    NtcbReply::Flex {
                        protocol_version,
                        struct_version,
                    } => put(
                        &mut body,
                        &[b"*<FLEX", &[0xB0, protocol_version, struct_version]],
                    ),
                    NtcbReply::TmKey => put(&mut body, &[b"*<TMKEY"]),
                    NtcbReply::Code { mode } => put(&mut body, &[b"*<CODE", &[mode]]),
                    NtcbReply::S2u { result } => put(&mut body, &[b"*<S2U", &[result]]),
                    NtcbReply::LegacyArchive { count } => put(&mut body, &[b"*<A", &[count]]),
                    NtcbReply::LegacyAlarm { index } => {
                        put(&mut body, &[b"*<T", &index.to_le_bytes()])
                    }
                };
                let body = &body[..n];
                let start = out.len();
                out.extend_from_slice(&PREAMBLE);
                out.extend_from_slice(&receiver_id.to_le_bytes());
                out.extend_from_slice(&sender_id.to_le_bytes());
                // Reply bodies are at most 10 bytes.
                out.extend_from_slice(&(n as u16).to_le_bytes());
                out.push(xor8(body));
                let csp = xor8(&out[start..]);
                out.push(csp);
                out.extend_from_slice(body);
            }
            Reply::Archive { count } => flex(out, &[b'~', b'A', count]),
            Reply::Alarm { event_index } => {
                let i = event_index.to_le_bytes();
                flex(out, &[b'~', b'T', i[0], i[1], i[2], i[3]]);
            }
            Reply::Current => flex(out, b"~C"),
            Reply::ExtArchive { count } => flex(out, &[b'~', b'E', count]),
            Reply::ExtAlarm { event_index } => {
                let i = event_index.to_le_bytes();
                flex(out, &[b'~', b'X', i[0], i[1], i[2], i[3]]);
            }
            Reply::TransparentAccepted { module, put_id } => {
                flex(out, &[b'~', b'M', module, put_id]);
            }
        }
    }

    /// The answer's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        self.encode_into(&mut out);
        out
    }
}

fn put(buf: &mut [u8; 16], parts: &[&[u8]]) -> usize {
    let mut n = 0;
    for p in parts {
        buf[n..n + p.len()].copy_from_slice(p);
        n += p.len();
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_replies() {
        let hex = |r: Reply| hex::encode(r.to_bytes());
        assert_eq!(hex(Reply::Current), "7e43b9");
        assert_eq!(hex(Reply::Archive { count: 1 }), "7e4101df");
        assert_eq!(hex(Reply::ExtArchive { count: 1 }), "7e45015c");
        assert_eq!(hex(Reply::Alarm { event_index: 12 }), "7e540c0000000b");
        assert_eq!(
            hex(Reply::Ntcb {
                receiver_id: 0,
                sender_id: 1,
                body: NtcbReply::Handshake
            }),
            "404e544300000000010000000300455e2a3c53"
        );
        assert_eq!(
            hex(Reply::Ntcb {
                receiver_id: 0,
                sender_id: 1,
                body: NtcbReply::Flex {
                    protocol_version: 0x1E,
                    struct_version: 0x1E
                }
            }),
            "404e544300000000010000000900b1a02a3c464c4558b01e1e"
        );
    }

    #[test]
    fn only_data_acknowledgements_need_a_commit() {
        assert!(Reply::Archive { count: 1 }.needs_commit());
        assert!(Reply::Current.needs_commit());
        let ntcb = |body| Reply::Ntcb {
            receiver_id: 0,
            sender_id: 1,
            body,
        };
        assert!(!ntcb(NtcbReply::Handshake).needs_commit());
        assert!(!ntcb(NtcbReply::Code { mode: 0 }).needs_commit());
        assert!(ntcb(NtcbReply::LegacyAlarm { index: 3 }).needs_commit());
    }
}
