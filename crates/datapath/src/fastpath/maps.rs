//! The Rust side of `bpf/weft_maps.h`: the keys and values weftd writes into
//! the fast path's maps, encoded byte for byte as the C structs lay them out.
//! `layout_drift` (below) compiles a probe of the header and compares.

use std::net::IpAddr;

use ipnet::IpNet;

/// `WEFT_AF_INET` / `WEFT_AF_INET6`.
pub const AF_INET: u8 = 4;
pub const AF_INET6: u8 = 6;
/// `WEFT_EP_FAST`.
pub const EP_FAST: u8 = 1;

/// `struct weft_ep_key`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EpKey {
    pub family: u8,
    pub pad: [u8; 3],
    pub addr: [u8; 16],
}

/// `struct weft_ep_value`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EpValue {
    pub host_ifindex: u32,
    pub pod_mac: [u8; 6],
    pub flags: u8,
    pub pad: u8,
}

/// `struct weft_cidr_key` (an LPM trie key).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CidrKey {
    pub prefixlen: u32,
    pub family: u8,
    pub pad: [u8; 3],
    pub addr: [u8; 16],
}

/// `struct weft_config`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Config {
    pub remote_ifindex: u32,
    pub flags: u32,
}

/// `enum weft_stat`: the counters' indexes, in order.
pub const STATS: [&str; 7] = [
    "local",
    "remote",
    "pass_not_pod",
    "pass_tracked",
    "pass_slow_endpoint",
    "pass_proto",
    "pass_fib",
];

fn family_and_addr(ip: IpAddr) -> (u8, [u8; 16]) {
    let mut addr = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            addr[..4].copy_from_slice(&v4.octets());
            (AF_INET, addr)
        }
        IpAddr::V6(v6) => (AF_INET6, v6.octets()),
    }
}

impl EpKey {
    pub fn new(ip: IpAddr) -> Self {
        let (family, addr) = family_and_addr(ip);
        EpKey {
            family,
            pad: [0; 3],
            addr,
        }
    }

    pub fn to_bytes(self) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[0] = self.family;
        b[4..20].copy_from_slice(&self.addr);
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; 20] = b.try_into().ok()?;
        Some(EpKey {
            family: b[0],
            pad: [0; 3],
            addr: b[4..20].try_into().ok()?,
        })
    }
}

impl EpValue {
    pub fn to_bytes(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0..4].copy_from_slice(&self.host_ifindex.to_ne_bytes());
        b[4..10].copy_from_slice(&self.pod_mac);
        b[10] = self.flags;
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; 12] = b.try_into().ok()?;
        Some(EpValue {
            host_ifindex: u32::from_ne_bytes(b[0..4].try_into().ok()?),
            pod_mac: b[4..10].try_into().ok()?,
            flags: b[10],
            pad: 0,
        })
    }
}

impl CidrKey {
    /// The trie key of a pool; the family byte and its padding count as 32
    /// leading bits of the prefix.
    pub fn new(net: IpNet) -> Self {
        let (family, addr) = family_and_addr(net.network());
        CidrKey {
            prefixlen: 32 + u32::from(net.prefix_len()),
            family,
            pad: [0; 3],
            addr,
        }
    }

    pub fn to_bytes(self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[0..4].copy_from_slice(&self.prefixlen.to_ne_bytes());
        b[4] = self.family;
        b[8..24].copy_from_slice(&self.addr);
        b
    }
}

impl Config {
    pub fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&self.remote_ifindex.to_ne_bytes());
        b[4..8].copy_from_slice(&self.flags.to_ne_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};
    use std::process::Command;

    /// Compiles a probe of `bpf/weft_maps.h` with the host C compiler and
    /// compares every size, offset and constant with this module. A change on
    /// one side only fails here, before any kernel sees a misread map.
    #[test]
    fn layout_drift() {
        let dir = std::env::temp_dir().join(format!("weft-maps-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let header = concat!(env!("CARGO_MANIFEST_DIR"), "/bpf/weft_maps.h");
        let probe = dir.join("probe.c");
        std::fs::write(
            &probe,
            format!(
                r#"#include <stdio.h>
#include <stddef.h>
#include "{header}"
#define S(t) printf(#t " size %zu\n", sizeof(struct t))
#define O(t, f) printf(#t "." #f " %zu\n", offsetof(struct t, f))
int main(void) {{
  S(weft_map_def); S(weft_ep_key); S(weft_ep_value); S(weft_cidr_key); S(weft_config);
  O(weft_ep_key, family); O(weft_ep_key, addr);
  O(weft_ep_value, host_ifindex); O(weft_ep_value, pod_mac); O(weft_ep_value, flags);
  O(weft_cidr_key, prefixlen); O(weft_cidr_key, family); O(weft_cidr_key, addr);
  O(weft_config, remote_ifindex); O(weft_config, flags);
  printf("AF_INET %d\nAF_INET6 %d\nEP_FAST %d\nSTAT_MAX %d\n",
         WEFT_AF_INET, WEFT_AF_INET6, WEFT_EP_FAST, WEFT_STAT_MAX);
  printf("STAT_LOCAL %d\nSTAT_REMOTE %d\nSTAT_PASS_NOT_POD %d\nSTAT_PASS_TRACKED %d\n",
         WEFT_STAT_LOCAL, WEFT_STAT_REMOTE, WEFT_STAT_PASS_NOT_POD, WEFT_STAT_PASS_TRACKED);
  printf("STAT_PASS_SLOW_EP %d\nSTAT_PASS_PROTO %d\nSTAT_PASS_FIB %d\n",
         WEFT_STAT_PASS_SLOW_EP, WEFT_STAT_PASS_PROTO, WEFT_STAT_PASS_FIB);
  return 0;
}}
"#
            ),
        )
        .unwrap();
        let exe = dir.join("probe");
        let cc = Command::new("cc")
            .arg("-o")
            .arg(&exe)
            .arg(&probe)
            .status()
            .expect("a C compiler (cc) runs the layout probe; scripts/setup.sh installs one");
        assert!(cc.success(), "the layout probe did not compile");
        let out = Command::new(&exe).output().unwrap();
        std::fs::remove_dir_all(&dir).ok();
        let text = String::from_utf8(out.stdout).unwrap();
        let c: std::collections::HashMap<&str, usize> = text
            .lines()
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(k, v)| (k, v.parse().unwrap()))
            .collect();

        let rust: &[(&str, usize)] = &[
            ("weft_map_def size", 20),
            ("weft_ep_key size", size_of::<EpKey>()),
            ("weft_ep_value size", size_of::<EpValue>()),
            ("weft_cidr_key size", size_of::<CidrKey>()),
            ("weft_config size", size_of::<Config>()),
            ("weft_ep_key.family", offset_of!(EpKey, family)),
            ("weft_ep_key.addr", offset_of!(EpKey, addr)),
            (
                "weft_ep_value.host_ifindex",
                offset_of!(EpValue, host_ifindex),
            ),
            ("weft_ep_value.pod_mac", offset_of!(EpValue, pod_mac)),
            ("weft_ep_value.flags", offset_of!(EpValue, flags)),
            ("weft_cidr_key.prefixlen", offset_of!(CidrKey, prefixlen)),
            ("weft_cidr_key.family", offset_of!(CidrKey, family)),
            ("weft_cidr_key.addr", offset_of!(CidrKey, addr)),
            (
                "weft_config.remote_ifindex",
                offset_of!(Config, remote_ifindex),
            ),
            ("weft_config.flags", offset_of!(Config, flags)),
            ("AF_INET", AF_INET.into()),
            ("AF_INET6", AF_INET6.into()),
            ("EP_FAST", EP_FAST.into()),
            ("STAT_MAX", STATS.len()),
            ("STAT_LOCAL", 0),
            ("STAT_REMOTE", 1),
            ("STAT_PASS_NOT_POD", 2),
            ("STAT_PASS_TRACKED", 3),
            ("STAT_PASS_SLOW_EP", 4),
            ("STAT_PASS_PROTO", 5),
            ("STAT_PASS_FIB", 6),
        ];
        for (name, want) in rust {
            assert_eq!(c.get(name), Some(want), "{name}: C says {:?}", c.get(name));
        }
        assert_eq!(c.len(), rust.len(), "the probe printed something unchecked");
        // the encoders write exactly the structs' sizes
        assert_eq!(
            EpKey::new("10.0.0.1".parse().unwrap()).to_bytes().len(),
            size_of::<EpKey>()
        );
        assert_eq!(
            EpValue::from_bytes(&[0; 12]).unwrap().to_bytes().len(),
            size_of::<EpValue>()
        );
        assert_eq!(
            CidrKey::new("10.0.0.0/8".parse().unwrap()).to_bytes().len(),
            size_of::<CidrKey>()
        );
        assert_eq!(Config::default().to_bytes().len(), size_of::<Config>());
    }

    #[test]
    fn encodings() {
        let k = EpKey::new("10.1.2.3".parse().unwrap());
        let b = k.to_bytes();
        assert_eq!(&b[..8], &[4, 0, 0, 0, 10, 1, 2, 3]);
        assert!(b[8..].iter().all(|&x| x == 0));
        assert_eq!(EpKey::from_bytes(&b), Some(k));
        let k6 = EpKey::new("fd00::1".parse().unwrap());
        assert_eq!(EpKey::from_bytes(&k6.to_bytes()), Some(k6));
        assert_eq!(EpKey::from_bytes(&[0; 19]), None);

        let v = EpValue {
            host_ifindex: 7,
            pod_mac: [1, 2, 3, 4, 5, 6],
            flags: EP_FAST,
            pad: 0,
        };
        assert_eq!(EpValue::from_bytes(&v.to_bytes()), Some(v));

        let c = CidrKey::new("10.244.0.0/16".parse().unwrap());
        assert_eq!(c.prefixlen, 48);
        let c6 = CidrKey::new("fd00:244::/48".parse().unwrap());
        assert_eq!(c6.prefixlen, 80);
        assert_eq!(c6.to_bytes()[4], AF_INET6);
    }
}
