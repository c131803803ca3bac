//! The FLEX field dictionary: one data table describing every field number 1..=255 that the
//! reference defines (size, wire layout, stable snake_case name, unit, scale, "no data" sentinel).
//!
//! The decoder never matches on field numbers to learn sizes or types: it reads this table.
//! The convenience "core" of a record (index, times, position, …) is the only place where
//! particular field numbers carry meaning, and it lives in `record.rs`.

mod table;

pub use table::FIELDS;

/// One scalar component as it appears on the wire (little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 16-bit integer.
    U16,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 32-bit integer.
    U32,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 64-bit integer.
    U64,
    /// Signed 64-bit integer.
    I64,
    /// IEEE-754 single precision float.
    F32,
}

impl Scalar {
    /// Size of the component on the wire, in bytes.
    pub const fn size(self) -> usize {
        match self {
            Scalar::U8 | Scalar::I8 => 1,
            Scalar::U16 | Scalar::I16 => 2,
            Scalar::U32 | Scalar::I32 | Scalar::F32 => 4,
            Scalar::U64 | Scalar::I64 => 8,
        }
    }

    /// Stable lowercase name (`u8`, `i16`, `f32`, …) used in listings and the API.
    pub const fn name(self) -> &'static str {
        match self {
            Scalar::U8 => "u8",
            Scalar::I8 => "i8",
            Scalar::U16 => "u16",
            Scalar::I16 => "i16",
            Scalar::U32 => "u32",
            Scalar::I32 => "i32",
            Scalar::U64 => "u64",
            Scalar::I64 => "i64",
            Scalar::F32 => "f32",
        }
    }
}

/// The "no data" convention of a field: raw values that mean "not measured / not connected /
/// sensor error" rather than a reading. The raw value is always kept; only the scaled value
/// becomes absent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoData {
    /// Every raw value is a reading.
    None,
    /// The raw component equals this value (compared as a signed 64-bit integer, so `-128`
    /// for an `i8`, `0xFFFF` for a `u16`).
    Equals(i64),
    /// Raw component values at or above this are error codes (RS-485 fuel levels: 65500..).
    AtLeast(i64),
    /// A negative float means "not read" (CAN fuel used, CAN mileage).
    Negative,
}

/// Which components of a composite field the [`NoData`] rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoDataOn {
    /// Every component (plain scalars have exactly one).
    All,
    /// Only the component at this position (0-based, wire order).
    Only(u8),
}

/// The FLEX structure version that introduced a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Since {
    /// FLEX structure 1.0, fields 1..=69.
    V1,
    /// FLEX structure 2.0, fields 70..=122.
    V2,
    /// FLEX structure 3.0, fields 123..=255.
    V3,
}

/// The definition of one FLEX field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldDef {
    /// Field number, 1-based, as in the negotiation mask.
    pub number: u8,
    /// Stable snake_case name, unique across the table; never renamed once released, because
    /// stored JSON and API clients key on it.
    pub name: &'static str,
    /// Total size on the wire in bytes; always equals the sum of `wire` component sizes.
    pub size: u8,
    /// Components in wire order; plain scalars have exactly one.
    pub wire: &'static [Scalar],
    /// Unit of the scaled value (`"mV"`, `"deg"`, `"km/h"`, `"s"`, …); empty when the value is
    /// a count, a code or a bitfield.
    pub unit: &'static str,
    /// Multiplier from the raw integer to the unit (`1.0` when the raw value is already in the
    /// unit, or for codes and bitfields).
    pub scale: f64,
    /// Raw values that mean "no data".
    pub no_data: NoData,
    /// Components the `no_data` rule applies to.
    pub no_data_on: NoDataOn,
    /// Structure version that introduced the field.
    pub since: Since,
    /// One-line English description from the reference.
    pub description: &'static str,
}

/// The definition of field `number`, or `None` for a number the dictionary does not define
/// (only 0 today; the type leaves room for the reference to shrink or grow).
pub fn lookup(number: u8) -> Option<&'static FieldDef> {
    let def = FIELDS.get(usize::from(number).checked_sub(1)?)?;
    debug_assert_eq!(def.number, number);
    Some(def)
}

/// The definition whose stable name is `name`.
pub fn by_name(name: &str) -> Option<&'static FieldDef> {
    FIELDS.iter().find(|def| def.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn table_is_complete_and_ordered() {
        assert_eq!(FIELDS.len(), 255);
        for (i, def) in FIELDS.iter().enumerate() {
            assert_eq!(usize::from(def.number), i + 1, "field at position {i}");
        }
    }

    #[test]
    fn sizes_match_wire_components() {
        for def in FIELDS.iter() {
            let sum: usize = def.wire.iter().map(|s| s.size()).sum();
            assert_eq!(usize::from(def.size), sum, "field {}", def.number);
            if let NoDataOn::Only(i) = def.no_data_on {
                assert!(usize::from(i) < def.wire.len(), "field {}", def.number);
            }
            if def.no_data == NoData::Negative {
                assert!(def.wire.contains(&Scalar::F32), "field {}", def.number);
            }
        }
    }

    #[test]
    fn names_are_unique_snake_case() {
        let mut seen = HashSet::new();
        for def in FIELDS.iter() {
            assert!(seen.insert(def.name), "duplicate name {}", def.name);
            assert!(
                def.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    && def.name.starts_with(|c: char| c.is_ascii_lowercase()),
                "not snake_case: {}",
                def.name
            );
        }
    }

    /// The reference (§7.1) gives the record size with every field of a structure enabled.
    #[test]
    fn full_record_sizes_match_reference() {
        let total = |last: u8| -> usize {
            FIELDS
                .iter()
                .filter(|d| d.number <= last)
                .map(|d| usize::from(d.size))
                .sum()
        };
        assert_eq!(total(69), 146);
        assert_eq!(total(122), 404);
        assert_eq!(total(255), 734);
    }

    #[test]
    fn since_matches_number_ranges() {
        for def in FIELDS.iter() {
            let expected = match def.number {
                1..=69 => Since::V1,
                70..=122 => Since::V2,
                _ => Since::V3,
            };
            assert_eq!(def.since, expected, "field {}", def.number);
        }
    }

    #[test]
    fn lookup_rejects_zero_and_finds_by_name() {
        assert!(lookup(0).is_none());
        assert_eq!(lookup(19).map(|d| d.size), Some(2));
        let lat = lookup(10).map(|d| d.name).unwrap_or_default();
        assert_eq!(by_name(lat).map(|d| d.number), Some(10));
    }
}
