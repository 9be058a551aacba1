//! The hashes Maglev tables are built with. They are part of the contract
//! between nodes (every node must build the same table from the same
//! backends, or a flow moving between nodes changes backend), so they are
//! defined here, byte for byte, instead of std's randomly keyed hasher.

use std::net::IpAddr;

use crate::endpoints::BackendAddr;

/// FNV-1a over `bytes` started from a seeded basis, then murmur3's 64-bit
/// finaliser so every input bit reaches every output bit. Two seeds give
/// two hashes independent enough for Maglev's offset and skip.
pub fn hash64(seed: u64, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The bytes a backend is hashed by: address (4 or 16 bytes), port (big
/// endian), IP protocol number. Node-independent by construction.
pub fn backend_key(b: &BackendAddr) -> Vec<u8> {
    let mut out = match b.addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    out.extend_from_slice(&b.port.to_be_bytes());
    out.push(b.proto.number());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_pinned() {
        // A change here changes every node's Maglev tables: a rolling
        // upgrade would then move flows. Change it only on purpose.
        assert_eq!(hash64(0, b""), fmix64(0xcbf2_9ce4_8422_2325));
        assert_eq!(hash64(1, b"weft"), 14300382515185579511);
        assert_eq!(
            hash64(2, &[10, 0, 0, 1, 0x1f, 0x90, 6]),
            7714047327911072995
        );
        assert_ne!(hash64(1, b"10.0.0.1"), hash64(2, b"10.0.0.1"));
        assert_eq!(hash64(7, b"abc"), hash64(7, b"abc"));
    }
}
