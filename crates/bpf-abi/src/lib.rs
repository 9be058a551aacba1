//! The ABI between weft's eBPF programs and weftd, defined once.
//!
//! The C headers under `include/weft/` are the definition: map keys and
//! values (`maps.h`), the counters (`counters.h`), the programs' verdicts
//! (`verdicts.h`), flow events and drop reasons (`flow.h`). `build.rs` generates their Rust twins from them at build
//! time: every `#define WEFT_X` becomes a constant `X`, every `struct
//! weft_y_z` a `#[repr(C)]` struct `YZ` that is [`weft_bpf::Pod`] (so maps
//! take it as it is, no hand-written byte offsets), every enum its values
//! and, when it ends in `_MAX`, its names and a struct of one `u64` per
//! value ([`Stats`]). The drift test compiles a probe of the headers with
//! the C compiler and compares every generated size, offset and constant.
//!
//! What is behaviour rather than layout (building a key from an address)
//! is written here by hand, on the generated types.

use std::net::IpAddr;

use ipnet::IpNet;

include!(concat!(env!("OUT_DIR"), "/abi.rs"));

/// The directory to put on the C compiler's include path (`-I`), so that
/// programs include `"weft/maps.h"`. Build scripts of dependents get it as
/// `DEP_WEFT_BPF_ABI_INCLUDE`.
pub const INCLUDE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include");

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
    /// The endpoints map key of a pod address.
    pub fn new(ip: IpAddr) -> Self {
        let (family, addr) = family_and_addr(ip);
        EpKey {
            family,
            pad: [0; 3],
            addr,
        }
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
}

impl Stats {
    /// Slot `index` of the counters map (an `enum weft_stat` value).
    pub fn add(&mut self, index: usize, v: u64) {
        let mut s = self.slots();
        if let Some(x) = s.get_mut(index) {
            *x += v;
        }
        *self = Stats::from_slots(s);
    }

    /// The counters in enum order.
    pub fn slots(&self) -> [u64; STAT_MAX as usize] {
        self.pairs().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests;
