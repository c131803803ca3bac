//! Record bytes at load-generator speed. Generating every record's values from scratch
//! (a map of random values per field, then the encoder) cost more CPU than the server spent
//! storing the record, and the simulator shares the machine with the server in benchmarks.
//! A device instead encodes a few records once and sends record `k` as template `k % N` with
//! its index, event time and fix time rewritten in place: every record still has a unique
//! (index, event time) key, valid values for every enabled field, and about one record in
//! twenty has no GPS fix.

use svoi_proto::record::{RawValue, Value};
use svoi_proto::{EncodeError, RecordLayout, encode};

use crate::profile::DeviceProfile;

/// Templates per device: 20, so that one in twenty (5 %) can be the no-fix one.
const TEMPLATES: usize = 20;

/// The encoded templates of one device and where the rewritten fields sit.
#[derive(Debug, Clone)]
pub(crate) struct Templates {
    records: Vec<Vec<u8>>,
    /// Event time each template was generated with.
    times: Vec<u32>,
    /// Raw latitude and longitude of each template with a valid fix.
    fixes: Vec<Option<(i32, i32)>>,
    index_at: Option<usize>,
    time_at: Option<usize>,
    fix_at: Option<usize>,
}

fn no_fix(values: &encode::RecordValues) -> bool {
    matches!(values.get(&8), Some(RawValue::Scalar(Value::U(0b01))))
}

impl Templates {
    /// Encodes the templates of `profile`: records 0..20, with the last one replaced by the
    /// first record without a fix when none of them lacks one.
    pub(crate) fn new(profile: &DeviceProfile, layout: &RecordLayout) -> Result<Self, EncodeError> {
        let mut picks: Vec<u32> = (0..TEMPLATES as u32).collect();
        if !picks.iter().any(|&k| no_fix(&profile.record_values(k)))
            && let Some(k) =
                (TEMPLATES as u32..100_000).find(|&k| no_fix(&profile.record_values(k)))
        {
            picks[TEMPLATES - 1] = k;
        }
        let mut records = Vec::with_capacity(TEMPLATES);
        let mut times = Vec::with_capacity(TEMPLATES);
        let mut fixes = Vec::with_capacity(TEMPLATES);
        for k in picks {
            let values = profile.record_values(k);
            let mut bytes = Vec::with_capacity(layout.record_size());
            encode::record(layout, &values, &mut bytes)?;
            records.push(bytes);
            times.push(profile.event_time(k));
            let raw = |n: u8| match values.get(&n) {
                Some(RawValue::Scalar(Value::I(v))) => i32::try_from(*v).ok(),
                _ => None,
            };
            fixes.push(match (no_fix(&values), raw(10), raw(11)) {
                (false, Some(lat), Some(lon)) => Some((lat, lon)),
                _ => None,
            });
        }
        let at = |n: u8| {
            layout
                .slots()
                .iter()
                .find(|s| s.def.number == n)
                .map(|s| s.offset)
        };
        Ok(Templates {
            records,
            times,
            fixes,
            index_at: at(1),
            time_at: at(3),
            fix_at: at(9),
        })
    }

    /// Raw latitude and longitude (1/600 000 degree) that archive record `index` carries, or
    /// `None` when it has no valid fix.
    pub(crate) fn fix(&self, index: u32) -> Option<(i32, i32)> {
        self.fixes
            .get(index as usize % self.fixes.len().max(1))
            .copied()
            .flatten()
    }

    /// Appends archive record `index` of the device to `out`.
    pub(crate) fn write(&self, profile: &DeviceProfile, index: u32, out: &mut Vec<u8>) {
        let k = index as usize % self.records.len();
        let start = out.len();
        out.extend_from_slice(&self.records[k]);
        let rec = &mut out[start..];
        let put = |rec: &mut [u8], at: Option<usize>, v: u32| {
            if let Some(i) = at {
                rec[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
        };
        let time = profile.event_time(index);
        put(rec, self.index_at, index);
        put(rec, self.time_at, time);
        if let Some(i) = self.fix_at {
            let fix = u32::from_le_bytes([rec[i], rec[i + 1], rec[i + 2], rec[i + 3]]);
            if fix != 0 {
                // Keep the template's lag between event and fix.
                let lag = self.times[k].wrapping_sub(fix);
                put(rec, Some(i), time.wrapping_sub(lag));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SimConfig, device_profile};
    use std::sync::Arc;

    #[test]
    fn records_have_their_own_key_and_some_have_no_fix() {
        let cfg = SimConfig::default();
        for i in 0..5 {
            let p = device_profile(&cfg, i);
            let layout = Arc::new(p.layout().unwrap());
            let t = Templates::new(&p, &layout).unwrap();
            let mut no_fix = 0;
            for index in [0u32, 7, 19, 20, 21, 399, 1_000_003] {
                let mut out = Vec::new();
                t.write(&p, index, &mut out);
                assert_eq!(out.len(), layout.record_size());
                let r = svoi_proto::Record::decode(&layout, &out);
                assert_eq!(r.core().index, Some(index));
                assert_eq!(r.core().event_time, Some(p.event_time(index)));
                if let Some(fix) = r.core().fix_time.filter(|&f| f != 0) {
                    assert!(fix <= p.event_time(index) && p.event_time(index) - fix <= 2);
                }
            }
            for index in 0..20u32 {
                let mut out = Vec::new();
                t.write(&p, index, &mut out);
                let r = svoi_proto::Record::decode(&layout, &out);
                if r.core().valid() == Some(false) {
                    no_fix += 1;
                }
            }
            assert!(no_fix >= 1, "device {i} never sends a record without a fix");
            // The first templates are exactly the per-index values.
            let mut direct = Vec::new();
            encode::record(&layout, &p.record_values(3), &mut direct).unwrap();
            let mut fast = Vec::new();
            t.write(&p, 3, &mut fast);
            assert_eq!(direct, fast);
        }
    }

    #[test]
    fn fix_is_what_the_record_carries() {
        let cfg = SimConfig::default();
        for i in 0..5 {
            let p = device_profile(&cfg, i);
            let layout = Arc::new(p.layout().unwrap());
            let t = Templates::new(&p, &layout).unwrap();
            let (mut with, mut without) = (0, 0);
            for index in 0..60u32 {
                let mut out = Vec::new();
                t.write(&p, index, &mut out);
                let c = *svoi_proto::Record::decode(&layout, &out).core();
                match t.fix(index) {
                    Some((lat, lon)) => {
                        with += 1;
                        assert_eq!(c.valid(), Some(true), "device {i} record {index}");
                        assert_eq!((c.latitude_raw, c.longitude_raw), (Some(lat), Some(lon)));
                    }
                    None => {
                        without += 1;
                        assert_eq!(c.valid(), Some(false), "device {i} record {index}");
                    }
                }
            }
            assert!(
                with > 0 && without > 0,
                "device {i}: {with} with, {without} without"
            );
        }
    }
}
