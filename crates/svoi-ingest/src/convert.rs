//! From a decoded message to what the store archives: the raw frame, its status and reason,
//! the device facts it carries and its records as typed rows. Shared by live ingest and by
//! `svoi reprocess`, so a frame decoded again yields rows exactly as the server would have
//! stored them.

use std::sync::Arc;

use svoi_proto::flex::FlexBody;
use svoi_proto::json::Values;
use svoi_proto::ntcb::Command;
use svoi_proto::record::Core;
use svoi_proto::{Body, ExtRecord, Message, Record, Session};
use svoi_store::{
    DecodedRecord, DeviceUpdate, ExtRecordRow, FrameRow, FrameStatus, LayoutKey, RecordKind,
    RecordRow,
};

/// The stable type name of a message, stored in `raw_frames.kind` and used as a metric label.
pub fn kind_name(m: &Message) -> &'static str {
    match &m.body {
        Body::Ntcb(p) => match &p.command {
            Some(Command::KeepAlive) => "ntcb_keepalive",
            Some(Command::Handshake { .. }) => "*>S",
            Some(Command::FlexRequest(_)) => "*>FLEX",
            Some(Command::FlexAnswer { .. }) => "*<FLEX",
            Some(Command::RecordAnswer { name, .. }) => name,
            Some(Command::TmKey { .. }) => "*>TMKEY",
            Some(Command::Code { .. }) => "*>CODE",
            Some(Command::S2u { .. }) => "*>S2U",
            Some(Command::LegacyArchive { .. }) => "*>A",
            Some(Command::LegacyAlarm { .. }) => "*>T",
            Some(Command::Text { .. }) => "ntcb_text",
            None => "ntcb",
        },
        Body::Flex(f) => f.kind.name(),
        Body::Ping => "ping",
        Body::Garbage => "garbage",
        Body::Error(_) => "error",
    }
}

/// The layout key of the session's current negotiation.
pub fn layout_key(session: &Session) -> Option<LayoutKey> {
    session.negotiated().map(|n| LayoutKey {
        protocol_version: n.protocol_version,
        struct_version: n.struct_version,
        data_size: n.data_size,
        mask: n.layout.mask().to_bitfield(n.data_size),
    })
}

fn core_row(c: &Core, fields_json: String) -> RecordRow {
    RecordRow {
        record_index: c.index,
        event_code: c.event_code,
        event_time: c.event_time.map(i64::from),
        fix_time: c.fix_time.map(i64::from),
        valid: c.valid(),
        satellites: c.satellites(),
        latitude: c.latitude(),
        longitude: c.longitude(),
        altitude_m: c.altitude_m(),
        speed_kmh: c.speed_kmh.map(f64::from),
        course: c.course,
        odometer_km: c.odometer_km.map(f64::from),
        power_mv: c.power_mv,
        battery_mv: c.battery_mv,
        gsm_level: c.gsm_level,
        fields_json,
    }
}

/// A record as a row: core columns, every other enabled field in the JSON object.
pub fn record_row(r: &Record) -> RecordRow {
    core_row(r.core(), Values::new(r, true).to_json_string())
}

fn ext_row(r: &ExtRecord, event_index: Option<u32>) -> ExtRecordRow {
    let mut json = String::from("{\"dynamic\":[");
    for (i, d) in r.dynamic.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            "{{\"type\":{},\"data_hex\":\"{}\"",
            d.kind,
            hex(&d.data)
        ));
        if let Some(v) = d.value() {
            json.push_str(&format!(",\"value\":{v}"));
        }
        json.push('}');
    }
    json.push(']');
    if !r.static_extra.is_empty() {
        json.push_str(&format!(
            ",\"static_extra_hex\":\"{}\"",
            hex(&r.static_extra)
        ));
    }
    json.push('}');
    ExtRecordRow {
        event_index,
        struct_version: r.struct_version,
        row: core_row(&r.core, json),
    }
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        // Writing into a String cannot fail.
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// What a message tells the store, before the frame's bookkeeping (ticket, connection, time)
/// is added: status, error, device facts and rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Stable type name.
    pub kind: &'static str,
    /// Outcome.
    pub status: FrameStatus,
    /// Bounded reason code when not ok.
    pub error_reason: Option<&'static str>,
    /// Error text when not ok.
    pub error: Option<String>,
    /// Device facts (handshake, negotiation).
    pub device: Option<DeviceUpdate>,
    /// Records.
    pub records: Vec<DecodedRecord>,
    /// Additional records.
    pub ext_records: Vec<ExtRecordRow>,
}

/// Converts one decoded message. `session` is the decoder state *after* the message (so a
/// negotiation's layout is already in force); `layout` is the key of that layout.
pub fn decoded(m: &Message, session: &Session, layout: Option<&Arc<LayoutKey>>) -> Decoded {
    let mut d = Decoded {
        kind: kind_name(m),
        status: FrameStatus::Ok,
        error_reason: None,
        error: None,
        device: None,
        records: Vec::new(),
        ext_records: Vec::new(),
    };
    if let Some(e) = m.error() {
        d.status = if m.sync_lost() {
            FrameStatus::Garbage
        } else {
            FrameStatus::Error
        };
        d.error_reason = Some(e.reason());
        d.error = Some(e.to_string());
        return d;
    }
    match &m.body {
        Body::Garbage => {
            d.status = FrameStatus::Garbage;
            d.error_reason = Some("garbage");
        }
        Body::Ntcb(p) => match &p.command {
            Some(Command::Handshake { .. }) => {
                d.device = Some(DeviceUpdate {
                    device_id: p.header.sender_id,
                    layout: None,
                    fields: None,
                });
            }
            Some(Command::FlexRequest(req)) if req.accepted() => {
                d.device = Some(DeviceUpdate {
                    device_id: p.header.sender_id,
                    layout: layout.cloned(),
                    fields: session
                        .negotiated()
                        .map(|n| n.layout.mask().iter().collect()),
                });
            }
            Some(Command::RecordAnswer { record, .. }) => d.records.push(DecodedRecord {
                kind: RecordKind::Current,
                row: record_row(record),
            }),
            _ => {}
        },
        Body::Flex(f) => match &f.body {
            FlexBody::Archive { records, .. } => {
                d.records.extend(records.iter().map(|r| DecodedRecord {
                    kind: RecordKind::Archive,
                    row: record_row(r),
                }))
            }
            FlexBody::Alarm {
                event_index,
                record,
            } => d.records.extend(record.iter().map(|r| DecodedRecord {
                kind: RecordKind::Alarm {
                    event_index: *event_index,
                },
                row: record_row(r),
            })),
            FlexBody::Current { record } => {
                d.records.extend(record.iter().map(|r| DecodedRecord {
                    kind: RecordKind::Current,
                    row: record_row(r),
                }))
            }
            FlexBody::ExtArchive { records, .. } => d
                .ext_records
                .extend(records.iter().map(|r| ext_row(r, None))),
            FlexBody::ExtAlarm {
                event_index,
                record,
            } => d
                .ext_records
                .extend(record.iter().map(|r| ext_row(r, Some(*event_index)))),
            FlexBody::Notification { .. }
            | FlexBody::Transparent { .. }
            | FlexBody::Unsupported { .. } => {}
        },
        Body::Ping | Body::Error(_) => {}
    }
    d
}

impl Decoded {
    /// The frame row with its bookkeeping.
    #[allow(clippy::too_many_arguments)]
    pub fn into_frame(
        self,
        seq: u64,
        conn_id: u64,
        imei: Option<Arc<str>>,
        received_at_us: i64,
        bytes: Vec<u8>,
        layout: Option<Arc<LayoutKey>>,
    ) -> FrameRow {
        FrameRow {
            seq,
            conn_id,
            imei,
            received_at_us,
            kind: Arc::from(self.kind),
            status: self.status,
            error_reason: self.error_reason,
            error: self.error,
            bytes,
            layout,
            device: self.device,
            records: self.records,
            ext_records: self.ext_records,
        }
    }

    /// Number of rows the frame will write (the writer's batch budget counts these).
    pub fn row_count(&self) -> usize {
        self.records.len() + self.ext_records.len()
    }
}

/// Decodes one archived frame again with today's decoder: a fresh session is brought to the
/// frame's recorded state (handshake, then the recorded negotiation when there was one) and
/// then fed the frame's bytes. Used by `svoi reprocess`.
pub fn redecode(
    imei: Option<&str>,
    device_id: Option<u32>,
    layout: Option<&LayoutKey>,
    bytes: &[u8],
    max_frame: usize,
) -> Decoded {
    let mut session = Session::new(svoi_proto::SessionConfig { max_frame });
    let dev = device_id.unwrap_or(1);
    if let Some(imei) = imei
        && let Ok(h) = svoi_proto::encode::handshake(dev, 0, imei)
    {
        for _ in session.messages(&h) {}
        if let Some(l) = layout
            && let Ok(mask) = svoi_proto::FieldMask::parse(l.data_size, &l.mask)
            && let Ok(req) = svoi_proto::encode::flex_request(
                dev,
                0,
                l.protocol_version,
                l.struct_version,
                l.data_size,
                &mask,
            )
        {
            for _ in session.messages(&req) {}
        }
    }
    let key = layout_key(&session).map(Arc::new);
    match session.decode(bytes) {
        svoi_proto::Step::Message(m) if m.len == bytes.len() => decoded(&m, &session, key.as_ref()),
        svoi_proto::Step::Message(m) => {
            // The archived bytes held more or less than one message: report it as the error it
            // would be now, keeping the first message's verdict visible.
            let mut d = decoded(&m, &session, key.as_ref());
            if d.status == FrameStatus::Ok {
                d.status = FrameStatus::Error;
                d.error_reason = Some("frame_boundary");
                d.error = Some(format!(
                    "archived frame of {} bytes decodes as a {}-byte message",
                    bytes.len(),
                    m.len
                ));
            }
            d
        }
        svoi_proto::Step::NeedMore => match session.decode_eof(bytes) {
            Some(m) => decoded(&m, &session, key.as_ref()),
            None => Decoded {
                kind: "error",
                status: FrameStatus::Error,
                error_reason: Some("truncated"),
                error: Some("empty frame".into()),
                device: None,
                records: Vec::new(),
                ext_records: Vec::new(),
            },
        },
    }
}
