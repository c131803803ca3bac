//! Decode errors. Each says what was wrong in lowercase words an operator can act on; the
//! session decides whether the stream can go on (framing intact) or sync is lost.

use thiserror::Error;

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// CSp or CSd of an NTCB packet does not match its bytes.
    #[error("ntcb checksum mismatch")]
    NtcbChecksum,
    /// The FLEX CRC8 does not match the message.
    #[error("crc8 mismatch")]
    Crc8,
    /// A packet starting with `@` does not carry the `@NTC` preamble.
    #[error("bad ntcb preamble")]
    BadPreamble,
    /// `~A`, `~T`, `~C` or `*@C` framing needs the record size from a negotiation.
    #[error("FLEX ~{0} before a successful *>FLEX negotiation")]
    NotNegotiated(char),
    /// A FLEX message type this codec cannot frame.
    #[error("unknown FLEX message type 0x{0:02x}")]
    UnknownFlexType(u8),
    /// A byte that starts no message while the session expects one.
    #[error("unexpected byte 0x{0:02x}: stream out of sync")]
    OutOfSync(u8),
    /// A frame longer than the configured limit.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// Length the frame announced.
        len: usize,
        /// Configured limit.
        limit: usize,
    },
    /// The `*>FLEX` body is shorter than its fixed part.
    #[error("*>FLEX body of {0} bytes is too short")]
    FlexRequestTooShort(usize),
    /// The protocol byte of `*>FLEX` is not 0xB0.
    #[error("unknown protocol code 0x{0:02x} (expected 0xb0 flex)")]
    UnknownProtocol(u8),
    /// No supported version is at or below the requested one.
    #[error("unsupported flex version 0x{0:02x}")]
    UnsupportedVersion(u8),
    /// The mask is not exactly `ceil(data_size / 8)` bytes long.
    #[error("*>FLEX mask of {got} bytes does not match data_size {data_size}")]
    MaskLength {
        /// Announced number of mask bits.
        data_size: u8,
        /// Mask bytes present.
        got: usize,
    },
    /// A field number the dictionary does not define.
    #[error("unknown field number {0}")]
    UnknownField(u8),
    /// `*>FLEX` before the `*>S` handshake.
    #[error("*>FLEX before the *>S handshake")]
    FlexBeforeHandshake,
    /// The handshake identifier is empty or not printable ASCII.
    #[error("invalid device identifier in *>S")]
    BadIdentifier,
    /// An additional record (`~E`/`~X`) whose parts do not add up.
    #[error("malformed additional record: {0}")]
    BadAdditionalRecord(&'static str),
    /// An NTCB command body shorter than its fixed fields.
    #[error("{0} body too short")]
    BodyTooShort(&'static str),
    /// Input ended in the middle of a message.
    #[error("input ended inside a message after {0} bytes")]
    Truncated(usize),
}

impl DecodeError {
    /// A short stable code for the error's kind (`"crc8"`, `"out_of_sync"`, ...): a bounded set
    /// fit for metric labels and for grouping stored decode errors.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::NtcbChecksum => "ntcb_checksum",
            DecodeError::Crc8 => "crc8",
            DecodeError::BadPreamble => "bad_preamble",
            DecodeError::NotNegotiated(_) => "not_negotiated",
            DecodeError::UnknownFlexType(_) => "unknown_flex_type",
            DecodeError::OutOfSync(_) => "out_of_sync",
            DecodeError::FrameTooLarge { .. } => "frame_too_large",
            DecodeError::FlexRequestTooShort(_) => "flex_request_too_short",
            DecodeError::UnknownProtocol(_) => "unknown_protocol",
            DecodeError::UnsupportedVersion(_) => "unsupported_version",
            DecodeError::MaskLength { .. } => "mask_length",
            DecodeError::UnknownField(_) => "unknown_field",
            DecodeError::FlexBeforeHandshake => "flex_before_handshake",
            DecodeError::BadIdentifier => "bad_identifier",
            DecodeError::BadAdditionalRecord(_) => "bad_additional_record",
            DecodeError::BodyTooShort(_) => "body_too_short",
            DecodeError::Truncated(_) => "truncated",
        }
    }
}

/// Why a record could not be encoded (simulator and tests only).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The record lacks a value for an enabled field.
    #[error("record has no value for enabled field {0}")]
    MissingField(u8),
    /// A value does not fit the wire type of its field.
    #[error("value for field {0} does not fit its wire type")]
    BadValue(u8),
    /// More records than a one-byte count can carry.
    #[error("{0} records do not fit one message (at most 255)")]
    TooManyRecords(usize),
    /// A body longer than a u16 length can carry.
    #[error("payload of {0} bytes is too long")]
    TooLong(usize),
}
