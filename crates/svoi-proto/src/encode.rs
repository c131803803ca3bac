//! Encoders for every device → server message, for the simulator, tests and benchmarks. The
//! server's answers are encoded by [`crate::reply::Reply`].
//!
//! NTCB helpers take the device's id and the server's id in the device's point of view: the
//! packet goes to `server_id` (IDr) from `device_id` (IDs).

use std::collections::BTreeMap;

use crate::checksum::crc8;
use crate::error::EncodeError;
use crate::mask::{FieldMask, RecordLayout};
use crate::ntcb::encode_packet;
use crate::record::{ExtRecord, RawValue};
use crate::version::FLEX_PROTOCOL;

/// The one-byte FLEX keep-alive.
pub const PING: u8 = 0x7F;

/// Values of a record to encode, by field number.
pub type RecordValues = BTreeMap<u8, RawValue>;

/// Appends one record laid out by `layout`; every enabled field needs a value of its type.
pub fn record(
    layout: &RecordLayout,
    values: &RecordValues,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    for slot in layout.slots() {
        let v = values
            .get(&slot.def.number)
            .ok_or(EncodeError::MissingField(slot.def.number))?;
        v.write(slot.def, out)?;
    }
    Ok(())
}

/// An NTCB packet from the device with any body.
pub fn ntcb(device_id: u32, server_id: u32, body: &[u8]) -> Result<Vec<u8>, EncodeError> {
    encode_packet(server_id, device_id, body)
}

/// `*>S:<imei>`.
pub fn handshake(device_id: u32, server_id: u32, imei: &str) -> Result<Vec<u8>, EncodeError> {
    ntcb(device_id, server_id, format!("*>S:{imei}").as_bytes())
}

/// `*>FLEX` with the mask `mask` over `data_size` bits.
pub fn flex_request(
    device_id: u32,
    server_id: u32,
    protocol_version: u8,
    struct_version: u8,
    data_size: u8,
    mask: &FieldMask,
) -> Result<Vec<u8>, EncodeError> {
    let mut body = b"*>FLEX".to_vec();
    body.extend_from_slice(&[FLEX_PROTOCOL, protocol_version, struct_version, data_size]);
    body.extend_from_slice(&mask.to_bitfield(data_size));
    ntcb(device_id, server_id, &body)
}

/// The empty NTCB keep-alive packet.
pub fn keepalive(device_id: u32, server_id: u32) -> Result<Vec<u8>, EncodeError> {
    ntcb(device_id, server_id, &[])
}

/// `*@C<record>`: a command answer carrying the current record.
pub fn record_answer(
    device_id: u32,
    server_id: u32,
    record: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    let mut body = b"*@C".to_vec();
    body.extend_from_slice(record);
    ntcb(device_id, server_id, &body)
}

/// Legacy `*>A` count format records.
pub fn legacy_archive(
    device_id: u32,
    server_id: u32,
    count: u8,
    format: u8,
    records: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    let mut body = b"*>A".to_vec();
    body.extend_from_slice(&[count, format]);
    body.extend_from_slice(records);
    ntcb(device_id, server_id, &body)
}

/// Legacy `*>T` format index record (`format` above 255 is sent as 0 + u16).
pub fn legacy_alarm(
    device_id: u32,
    server_id: u32,
    format: u16,
    index: u32,
    record: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    let mut body = b"*>T".to_vec();
    match u8::try_from(format) {
        Ok(f) if f != 0 => body.push(f),
        _ => {
            body.push(0);
            body.extend_from_slice(&format.to_le_bytes());
        }
    }
    body.extend_from_slice(&index.to_le_bytes());
    body.extend_from_slice(record);
    ntcb(device_id, server_id, &body)
}

fn finish(mut frame: Vec<u8>) -> Vec<u8> {
    frame.push(crc8(&frame));
    frame
}

/// `~A`: records already laid out by the session's mask (see [`record`]).
pub fn archive<R: AsRef<[u8]>>(records: &[R]) -> Result<Vec<u8>, EncodeError> {
    let count =
        u8::try_from(records.len()).map_err(|_| EncodeError::TooManyRecords(records.len()))?;
    let mut f = vec![b'~', b'A', count];
    for r in records {
        f.extend_from_slice(r.as_ref());
    }
    Ok(finish(f))
}

/// `~T` event_index record.
pub fn alarm(event_index: u32, record: &[u8]) -> Vec<u8> {
    let mut f = vec![b'~', b'T'];
    f.extend_from_slice(&event_index.to_le_bytes());
    f.extend_from_slice(record);
    finish(f)
}

/// `~C` record.
pub fn current(record: &[u8]) -> Vec<u8> {
    let mut f = vec![b'~', b'C'];
    f.extend_from_slice(record);
    finish(f)
}

/// `~E`: additional records.
pub fn ext_archive(records: &[ExtRecord]) -> Result<Vec<u8>, EncodeError> {
    let count =
        u8::try_from(records.len()).map_err(|_| EncodeError::TooManyRecords(records.len()))?;
    let mut f = vec![b'~', b'E', count];
    for r in records {
        r.encode(&mut f)?;
    }
    Ok(finish(f))
}

/// `~X` event_index additional record.
pub fn ext_alarm(event_index: u32, record: &ExtRecord) -> Result<Vec<u8>, EncodeError> {
    let mut f = vec![b'~', b'X'];
    f.extend_from_slice(&event_index.to_le_bytes());
    record.encode(&mut f)?;
    Ok(finish(f))
}

/// `~N` module notification time.
pub fn notification(module: u8, notification: u8, time: u32) -> Vec<u8> {
    let mut f = vec![b'~', b'N', module, notification];
    f.extend_from_slice(&time.to_le_bytes());
    finish(f)
}

/// `~P` module put_id len data.
pub fn transparent(module: u8, put_id: u8, data: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let len = u16::try_from(data.len()).map_err(|_| EncodeError::TooLong(data.len()))?;
    let mut f = vec![b'~', b'P', module, put_id];
    f.extend_from_slice(&len.to_le_bytes());
    f.extend_from_slice(data);
    Ok(finish(f))
}

/// `~Z:` followed by the two bytes after `~` of the rejected server message.
pub fn unsupported(rejected: [u8; 2]) -> Vec<u8> {
    finish(vec![b'~', b'Z', b':', rejected[0], rejected[1]])
}
