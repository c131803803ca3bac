//! FLEX protocol and structure versions, and the negotiation rule: answer with the highest
//! version we support that does not exceed the device's, separately for protocol and structure.

/// The protocol code of FLEX in `*>FLEX` (the only one defined).
pub const FLEX_PROTOCOL: u8 = 0xB0;

/// FLEX 1.0.
pub const V1_0: u8 = 0x0A;
/// FLEX 2.0.
pub const V2_0: u8 = 0x14;
/// FLEX 3.0.
pub const V3_0: u8 = 0x1E;

/// Versions this codec speaks, lowest first.
pub const SUPPORTED: [u8; 3] = [V1_0, V2_0, V3_0];

/// The version to answer a request for `requested` with: the highest supported version that is
/// not above it. `None` when the request is below every supported version.
pub fn best_supported(requested: u8) -> Option<u8> {
    SUPPORTED.iter().rev().copied().find(|&v| v <= requested)
}

/// Number of mask bits (`data_size`) of a full structure of version `struct_version`.
pub fn full_data_size(struct_version: u8) -> Option<u8> {
    match struct_version {
        V1_0 => Some(69),
        V2_0 => Some(122),
        V3_0 => Some(255),
        _ => None,
    }
}

/// Human form of a version byte: `0x14` → `"2.0"`.
pub fn display(version: u8) -> String {
    format!("{}.{}", version / 10, version % 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_highest_supported_not_above_request() {
        assert_eq!(best_supported(0x0A), Some(0x0A));
        assert_eq!(best_supported(0x0B), Some(0x0A));
        assert_eq!(best_supported(0x14), Some(0x14));
        assert_eq!(best_supported(0x1D), Some(0x14));
        assert_eq!(best_supported(0x1E), Some(0x1E));
        assert_eq!(best_supported(0xFF), Some(0x1E));
        assert_eq!(best_supported(0x09), None);
        assert_eq!(best_supported(0), None);
    }

    #[test]
    fn displays_versions() {
        assert_eq!(display(V1_0), "1.0");
        assert_eq!(display(V3_0), "3.0");
        assert_eq!(full_data_size(V2_0), Some(122));
        assert_eq!(full_data_size(0x0B), None);
    }
}
