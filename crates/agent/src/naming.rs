//! Deterministic host-side interface names.
//!
//! The host end of a pod's veth is named from the attachment (container id +
//! ifname), so weftd can find it again after a crash without any state, and a
//! new ADD for the same attachment lands on the same name (which is what lets
//! the deferred teardown of a DEL be ordered before it).

use weft_api::Attachment;

/// Every host-side veth weftd makes starts with this.
pub const HOST_PREFIX: &str = "weft";
const HASH_HEX_DIGITS: usize = 11;

/// `weft` + 11 hex digits of a 64-bit FNV-1a hash: 15 bytes, the kernel's limit.
pub fn host_ifname(attachment: &Attachment) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = attachment
        .container_id
        .bytes()
        .chain(std::iter::once(0))
        .chain(attachment.ifname.bytes());
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let hex = format!("{hash:016x}");
    format!("{HOST_PREFIX}{}", &hex[..HASH_HEX_DIGITS])
}

/// Whether `name` has the exact shape of a host-side veth weftd made (and so
/// may be cleaned up as an orphan). Other weft devices (a VXLAN device, say)
/// never match.
pub fn is_host_ifname(name: &str) -> bool {
    name.len() == HOST_PREFIX.len() + HASH_HEX_DIGITS
        && name.starts_with(HOST_PREFIX)
        && name[HOST_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(cid: &str, ifname: &str) -> Attachment {
        Attachment {
            container_id: cid.into(),
            ifname: ifname.into(),
        }
    }

    #[test]
    fn names_are_stable_short_and_recognised() {
        let a = host_ifname(&att("abc123", "eth0"));
        assert_eq!(a, host_ifname(&att("abc123", "eth0")));
        assert_eq!(a.len(), 15);
        assert!(is_host_ifname(&a));
        assert_ne!(a, host_ifname(&att("abc123", "eth1")));
        assert_ne!(a, host_ifname(&att("abc124", "eth0")));
        // the separator keeps ("ab","c") and ("a","bc") apart
        assert_ne!(host_ifname(&att("ab", "c")), host_ifname(&att("a", "bc")));
    }

    #[test]
    fn foreign_names_are_not_ours() {
        for name in [
            "eth0",
            "weft",
            "weft-vxlan",
            "weft0123456789",
            "weftABCDEF01234",
            "weft0123456789ab",
        ] {
            assert!(!is_host_ifname(name), "{name}");
        }
    }

    #[test]
    fn no_collisions_among_many_containers() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..20_000 {
            assert!(seen.insert(host_ifname(&att(&format!("{i:064x}"), "eth0"))));
        }
    }
}
