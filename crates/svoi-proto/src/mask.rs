//! The FLEX field mask agreed in `*>FLEX`, and the record layout derived from it: which fields
//! a record carries, at which offsets, and the record size R that frames `~A`, `~T`, `~C` and
//! `*@C`.

use crate::dictionary::{self, FieldDef};
use crate::error::DecodeError;
use crate::record::CoreOffsets;

/// A set of enabled FLEX field numbers (1..=255).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FieldMask {
    bits: [u64; 4],
}

impl std::fmt::Debug for FieldMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Number of bytes that carry a mask of `data_size` bits on the wire: `ceil(data_size / 8)`.
pub const fn bitfield_len(data_size: u8) -> usize {
    (data_size as usize).div_ceil(8)
}

impl FieldMask {
    /// The empty mask.
    pub const fn empty() -> Self {
        FieldMask { bits: [0; 4] }
    }

    /// Every field from 1 to `last` (e.g. 69, 122 or 255 for the full structures).
    pub fn all_up_to(last: u8) -> Self {
        let mut mask = Self::empty();
        for f in 1..=last {
            mask.insert(f);
        }
        mask
    }

    /// A mask with exactly the given fields; field 0 does not exist and is rejected.
    pub fn from_fields(fields: impl IntoIterator<Item = u8>) -> Result<Self, DecodeError> {
        let mut mask = Self::empty();
        for f in fields {
            if f == 0 {
                return Err(DecodeError::UnknownField(0));
            }
            mask.insert(f);
        }
        Ok(mask)
    }

    /// Enables field `f` (ignored for 0, which no field has).
    pub fn insert(&mut self, f: u8) {
        if f != 0 {
            self.bits[usize::from(f / 64)] |= 1 << (f % 64);
        }
    }

    /// Whether field `f` is enabled.
    pub fn contains(&self, f: u8) -> bool {
        f != 0 && self.bits[usize::from(f / 64)] & (1 << (f % 64)) != 0
    }

    /// Number of enabled fields.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether no field is enabled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Enabled field numbers in increasing order (the order they have inside a record).
    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (1..=255u8).filter(move |&f| self.contains(f))
    }

    /// Highest enabled field number, or 0 for an empty mask.
    pub fn max_field(&self) -> u8 {
        (1..=255u8).rev().find(|&f| self.contains(f)).unwrap_or(0)
    }

    /// Parses the wire bitfield of a `*>FLEX` request: MSB first, field f is bit
    /// `7 - ((f-1) % 8)` of byte `(f-1) / 8`. Bits past `data_size` in the last byte are
    /// ignored: real devices send them set (a FLEX 2.0 capture has fields 126-128 on with
    /// `data_size` 122) and the reference decodes only the first `data_size` bits.
    pub fn parse(data_size: u8, bitfield: &[u8]) -> Result<Self, DecodeError> {
        let need = bitfield_len(data_size);
        if bitfield.len() < need {
            return Err(DecodeError::MaskLength {
                data_size,
                got: bitfield.len(),
            });
        }
        let mut mask = Self::empty();
        for (i, &byte) in bitfield[..need].iter().enumerate() {
            for bit in 0..8 {
                let f = i * 8 + bit + 1;
                if byte & (0x80 >> bit) != 0 && f <= usize::from(data_size) {
                    // f <= data_size <= 255 here.
                    mask.insert(f as u8);
                }
            }
        }
        Ok(mask)
    }

    /// The wire bitfield for `data_size` bits (fields above `data_size` are dropped).
    pub fn to_bitfield(&self, data_size: u8) -> Vec<u8> {
        let mut out = vec![0u8; bitfield_len(data_size)];
        for f in self.iter().filter(|&f| f <= data_size) {
            let i = usize::from(f - 1);
            out[i / 8] |= 0x80 >> (i % 8);
        }
        out
    }
}

/// Where one enabled field sits inside a record.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// The field's dictionary entry.
    pub def: &'static FieldDef,
    /// Byte offset of the field inside the record.
    pub offset: usize,
}

/// The layout of every record of a session: enabled fields in wire order with their offsets,
/// and the record size R.
#[derive(Debug, Clone)]
pub struct RecordLayout {
    mask: FieldMask,
    slots: Vec<Slot>,
    size: usize,
    core: CoreOffsets,
}

/// Two layouts are equal when their masks are: everything else derives from the mask.
impl PartialEq for RecordLayout {
    fn eq(&self, other: &Self) -> bool {
        self.mask == other.mask
    }
}

impl RecordLayout {
    /// Builds the layout of `mask` from the dictionary. Fails only for a field number the
    /// dictionary does not define.
    pub fn new(mask: FieldMask) -> Result<Self, DecodeError> {
        let mut slots = Vec::with_capacity(mask.len());
        let mut offset = 0;
        let mut core = CoreOffsets::default();
        for f in mask.iter() {
            let def = dictionary::lookup(f).ok_or(DecodeError::UnknownField(f))?;
            slots.push(Slot { def, offset });
            core.set(f, offset);
            offset += usize::from(def.size);
        }
        Ok(RecordLayout {
            mask,
            slots,
            size: offset,
            core,
        })
    }

    /// The mask this layout was built from.
    pub fn mask(&self) -> &FieldMask {
        &self.mask
    }

    /// Enabled fields in wire order.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// Record size R in bytes.
    pub fn record_size(&self) -> usize {
        self.size
    }

    /// Offsets of the core fields, for [`crate::record::Record`].
    pub(crate) fn core_offsets(&self) -> &CoreOffsets {
        &self.core
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wiki_flex30_mask_gives_reference_field_list_and_size() {
        let bits = hex::decode("fffe300a08000000020000000020003800200000000000000104000000060000")
            .unwrap_or_default();
        let mask = FieldMask::parse(255, &bits).expect("valid mask");
        let fields: Vec<u8> = mask.iter().collect();
        assert_eq!(
            fields,
            [
                1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 19, 20, 29, 31, 37, 71, 107,
                123, 124, 125, 139, 200, 206, 238, 239
            ]
        );
        assert_eq!(mask.to_bitfield(255), bits);
        let layout = RecordLayout::new(mask).expect("known fields");
        assert_eq!(layout.record_size(), 77);
    }

    #[test]
    fn short_mask_is_rejected_and_bits_beyond_data_size_ignored() {
        assert!(matches!(
            FieldMask::parse(69, &[0xFF; 8]),
            Err(DecodeError::MaskLength { .. })
        ));
        // data_size 69 leaves bits for fields 70..72 in the ninth byte unused.
        let mut bits = vec![0u8; 9];
        bits[0] = 0x80; // field 1
        bits[8] = 0x07; // fields 70, 71, 72
        let mask = FieldMask::parse(69, &bits).unwrap_or_default();
        assert_eq!(mask.iter().collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn field_zero_is_unknown() {
        assert!(matches!(
            FieldMask::from_fields([1, 0]),
            Err(DecodeError::UnknownField(0))
        ));
    }
}
