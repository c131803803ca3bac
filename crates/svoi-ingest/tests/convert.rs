//! Properties of the message → row conversion: what `svoi reprocess` derives from an archived
//! frame with the same decoder is exactly what the server stored live (so reprocessing is a
//! no-op until the decoder changes), for devices of every FLEX version and random field sets;
//! and no input makes conversion or re-decoding panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use proptest::prelude::*;
use svoi_ingest::convert;
use svoi_proto::{Session, SessionConfig, Step, encode};
use svoi_sim::{SimConfig, device_profile};

const MAX_FRAME: usize = 64 * 1024;

/// Decodes `stream` as the server does and checks each message against its re-decoding.
fn check_stream(stream: &[u8]) -> Result<usize, TestCaseError> {
    let mut session = Session::new(SessionConfig {
        max_frame: MAX_FRAME,
    });
    let mut layout = None;
    let mut start = 0;
    let mut checked = 0;
    while start < stream.len() {
        let m = match session.decode(&stream[start..]) {
            Step::Message(m) => m,
            Step::NeedMore => match session.decode_eof(&stream[start..]) {
                Some(m) => m,
                None => break,
            },
        };
        let bytes = &stream[start..start + m.len];
        start += m.len;
        if matches!(
            &m.body,
            svoi_proto::Body::Ntcb(p) if matches!(p.command, Some(svoi_proto::ntcb::Command::FlexRequest(_)))
        ) {
            layout = convert::layout_key(&session).map(Arc::new);
        }
        let live = convert::decoded(&m, &session, layout.as_ref());
        let imei = session.identity().map(|i| i.imei.clone());
        let device_id = session.identity().map(|i| i.device_id);
        let again = convert::redecode(
            imei.as_deref(),
            device_id,
            layout.as_deref(),
            bytes,
            MAX_FRAME,
        );
        // The device facts of a handshake or negotiation are not re-applied by reprocessing.
        prop_assert_eq!(&live.records, &again.records, "records of {}", live.kind);
        prop_assert_eq!(&live.ext_records, &again.ext_records);
        prop_assert_eq!(live.status, again.status, "status of {}", live.kind);
        prop_assert_eq!(live.kind, again.kind);
        prop_assert_eq!(live.error, again.error);
        checked += 1;
        if m.sync_lost() {
            // The server closes the session here.
            break;
        }
    }
    Ok(checked)
}

/// A device's session: handshake, negotiation, then `batches` archives, an alarm and a
/// current-state message.
fn device_stream(seed: u64, device: usize, batches: &[u8]) -> Vec<u8> {
    let cfg = SimConfig {
        seed,
        ..SimConfig::default()
    };
    let p = device_profile(&cfg, device);
    let layout = p.layout().unwrap();
    let mut out = encode::handshake(p.device_id, p.server_id, &p.imei).unwrap();
    out.extend(
        encode::flex_request(
            p.device_id,
            p.server_id,
            p.protocol_version,
            p.struct_version,
            p.data_size,
            &p.mask(),
        )
        .unwrap(),
    );
    let mut index = 0u32;
    for &n in batches {
        let records: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let mut r = Vec::new();
                encode::record(&layout, &p.record_values(index), &mut r).unwrap();
                index += 1;
                r
            })
            .collect();
        out.extend(encode::archive(&records).unwrap());
    }
    let mut r = Vec::new();
    encode::record(&layout, &p.record_values(index), &mut r).unwrap();
    out.extend(encode::alarm(index, &r));
    r.clear();
    encode::record(&layout, &p.current_values(index), &mut r).unwrap();
    out.extend(encode::current(&r));
    out.push(encode::PING);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn reprocessing_reproduces_what_was_stored(
        seed in any::<u64>(),
        device in 0usize..30,
        batches in proptest::collection::vec(1u8..20, 1..5),
    ) {
        let stream = device_stream(seed, device, &batches);
        let checked = check_stream(&stream)?;
        prop_assert_eq!(checked, 2 + batches.len() + 3);
    }

    #[test]
    fn damaged_streams_convert_without_panicking(
        seed in any::<u64>(),
        device in 0usize..30,
        batches in proptest::collection::vec(1u8..10, 1..3),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6),
    ) {
        let mut stream = device_stream(seed, device, &batches);
        for (at, x) in flips {
            let i = at.index(stream.len());
            stream[i] ^= x;
        }
        check_stream(&stream)?;
    }

    #[test]
    fn arbitrary_bytes_convert_without_panicking(
        seed in any::<u64>(),
        tail in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut stream = device_stream(seed, 0, &[1]);
        stream.extend(tail);
        check_stream(&stream)?;
    }
}
