//! The two checksums of the protocol: the 8-bit XOR of NTCB headers and bodies, and the FLEX
//! CRC8 (poly 0x31, init 0xFF, no reflection, no final XOR; catalogue name CRC-8/NRSC-5).
//!
//! The CRC runs on every telemetry byte, so it is computed with slicing-by-8 tables built at
//! compile time: eight independent table lookups per 8 input bytes instead of a chain of eight
//! dependent ones.

/// XOR of every byte, initial value 0 (NTCB `CSd` and `CSp`).
pub fn xor8(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |acc, b| acc ^ b)
}

const POLY: u8 = 0x31;

const fn base_table() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ POLY
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// `TABLES[k][x]` is the CRC register after feeding `x` followed by `k` zero bytes into a
/// zero register. Because the CRC is linear, eight bytes fold into one register as the XOR of
/// eight lookups.
const fn slicing_tables() -> [[u8; 256]; 8] {
    let base = base_table();
    let mut tables = [[0u8; 256]; 8];
    tables[0] = base;
    let mut k = 1;
    while k < 8 {
        let mut x = 0;
        while x < 256 {
            tables[k][x] = base[tables[k - 1][x] as usize];
            x += 1;
        }
        k += 1;
    }
    tables
}

static TABLES: [[u8; 256]; 8] = slicing_tables();

/// Initial register value of the FLEX CRC8.
pub const CRC8_INIT: u8 = 0xFF;

/// FLEX CRC8 of `bytes`.
pub fn crc8(bytes: &[u8]) -> u8 {
    crc8_update(CRC8_INIT, bytes)
}

/// Continues a FLEX CRC8 computation from register `crc` over `bytes`.
pub fn crc8_update(mut crc: u8, bytes: &[u8]) -> u8 {
    let t = &TABLES;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        crc = t[7][usize::from(crc ^ c[0])]
            ^ t[6][usize::from(c[1])]
            ^ t[5][usize::from(c[2])]
            ^ t[4][usize::from(c[3])]
            ^ t[3][usize::from(c[4])]
            ^ t[2][usize::from(c[5])]
            ^ t[1][usize::from(c[6])]
            ^ t[0][usize::from(c[7])];
    }
    for &b in chunks.remainder() {
        crc = t[0][usize::from(crc ^ b)];
    }
    crc
}

/// CRC-16/XMODEM (poly 0x1021, init 0): only used by the encrypted container (§6.3), which this
/// codec recognises but does not decrypt.
pub fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The bitwise definition from the reference, kept as the oracle for the table version.
    fn crc8_bitwise(bytes: &[u8]) -> u8 {
        let mut crc: u8 = 0xFF;
        for &b in bytes {
            crc ^= b;
            for _ in 0..8 {
                crc = if crc & 0x80 != 0 {
                    (crc << 1) ^ 0x31
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    #[test]
    fn reference_check_values() {
        assert_eq!(xor8(b"123456789"), 0x31);
        assert_eq!(crc8(b"123456789"), 0xF7);
        assert_eq!(crc8(b"~C"), 0xB9);
        assert_eq!(crc8(b"~A\x01"), 0xDF);
        assert_eq!(crc8(b"~A\x03"), 0xBD);
        assert_eq!(crc8(b"~A\x04"), 0x2A);
        assert_eq!(crc8(b"~E\x01"), 0x5C);
        assert_eq!(crc8(b"~E\x03"), 0x3E);
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        let base = base_table();
        assert_eq!(base[..8], [0x00, 0x31, 0x62, 0x53, 0xC4, 0xF5, 0xA6, 0x97]);
        assert_eq!(base[255], 0xAC);
    }

    #[test]
    fn wayrecall_check_values() {
        let a =
            hex::decode("7e54030000000300000001118e595a54018e595a54f1c47d4c03c59e71000000000000")
                .unwrap();
        assert_eq!(crc8(&a), 0x6D);
        let b =
            hex::decode("7e54020000000200000021118b715a54118b715a54f04c7c4c4c319e710000e0400200")
                .unwrap();
        assert_eq!(crc8(&b), 0x8D);
    }

    proptest! {
        #[test]
        fn sliced_equals_bitwise(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(crc8(&bytes), crc8_bitwise(&bytes));
        }

        #[test]
        fn update_composes(a in proptest::collection::vec(any::<u8>(), 0..50),
                           b in proptest::collection::vec(any::<u8>(), 0..50)) {
            let whole: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
            prop_assert_eq!(crc8_update(crc8(&a), &b), crc8(&whole));
        }
    }
}
