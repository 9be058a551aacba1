//! Port ranges as prefix-aligned blocks.
//!
//! The policy map is an LPM trie over (identity, direction, protocol, port):
//! a port range cannot be one key, so `port..=endPort` becomes the smallest
//! set of aligned power-of-two blocks covering exactly the range (as Cilium
//! does), each a key whose prefix stops inside the port bits. A range of n
//! ports needs at most 2·16 − 2 = 30 blocks; an exact port is one block of
//! length 16 and "any port" one of length 0.

/// A block of ports: the `len` leading bits of `port` are fixed, the rest
/// free (`port` has them zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortPrefix {
    pub port: u16,
    pub len: u8,
}

impl PortPrefix {
    pub const ANY: PortPrefix = PortPrefix { port: 0, len: 0 };

    pub fn exact(port: u16) -> Self {
        PortPrefix { port, len: 16 }
    }

    fn mask(self) -> u16 {
        if self.len == 0 {
            0
        } else {
            u16::MAX << (16 - self.len)
        }
    }

    pub fn contains(self, port: u16) -> bool {
        port & self.mask() == self.port
    }

    /// Whether every port of `other` is in `self`.
    pub fn covers(self, other: PortPrefix) -> bool {
        self.len <= other.len && self.contains(other.port)
    }

    /// First and last port of the block.
    pub fn bounds(self) -> (u16, u16) {
        (self.port, self.port | !self.mask())
    }
}

/// The blocks covering exactly `lo..=hi` (empty when `lo > hi`), in order.
pub fn range_prefixes(lo: u16, hi: u16) -> Vec<PortPrefix> {
    let mut out = Vec::new();
    let (mut lo, hi) = (u32::from(lo), u32::from(hi));
    while lo <= hi {
        // The biggest block that starts at `lo` (alignment) and ends by `hi`.
        let mut size: u32 = if lo == 0 {
            1 << 16
        } else {
            1 << lo.trailing_zeros()
        };
        while lo + size - 1 > hi {
            size >>= 1;
        }
        out.push(PortPrefix {
            port: lo as u16,
            len: 16 - size.trailing_zeros() as u8,
        });
        lo += size;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(port: u16, len: u8) -> PortPrefix {
        PortPrefix { port, len }
    }

    #[test]
    fn known_expansions() {
        assert_eq!(range_prefixes(80, 80), vec![p(80, 16)]);
        assert_eq!(range_prefixes(0, 65535), vec![PortPrefix::ANY]);
        assert_eq!(range_prefixes(80, 95), vec![p(80, 12)]);
        assert_eq!(range_prefixes(80, 81), vec![p(80, 15)]);
        assert_eq!(range_prefixes(81, 82), vec![p(81, 16), p(82, 16)]);
        assert_eq!(
            range_prefixes(32000, 32768),
            vec![p(32000, 8), p(32256, 7), p(32768, 16)]
        );
        assert_eq!(range_prefixes(1, 65535).len(), 16);
        assert_eq!(range_prefixes(1, 65534).len(), 30);
        assert!(range_prefixes(5, 4).is_empty());
    }

    /// Every range of a sample: the blocks are disjoint, in order, aligned,
    /// cover exactly the range, and are never more than 30.
    #[test]
    fn expansion_is_exact_for_sampled_ranges() {
        let edges: Vec<u16> = [
            0u16, 1, 2, 3, 7, 8, 79, 80, 81, 1023, 1024, 32767, 32768, 65534, 65535,
        ]
        .into_iter()
        .chain((0..200).map(|i| (i * 7919 % 65536) as u16))
        .collect();
        for &lo in &edges {
            for &hi in &edges {
                if lo > hi {
                    continue;
                }
                let blocks = range_prefixes(lo, hi);
                assert!(blocks.len() <= 30, "{lo}..={hi}: {}", blocks.len());
                let mut next = u32::from(lo);
                for b in &blocks {
                    let (first, last) = b.bounds();
                    assert_eq!(
                        u32::from(first),
                        next,
                        "{lo}..={hi} gap or overlap at {b:?}"
                    );
                    assert_eq!(b.port & !b.mask(), 0, "unaligned {b:?}");
                    next = u32::from(last) + 1;
                }
                assert_eq!(
                    next,
                    u32::from(hi) + 1,
                    "{lo}..={hi} not covered to the end"
                );
            }
        }
    }

    #[test]
    fn contains_and_covers() {
        assert!(p(80, 12).contains(95) && !p(80, 12).contains(96) && !p(80, 12).contains(79));
        assert!(PortPrefix::ANY.contains(0) && PortPrefix::ANY.contains(65535));
        assert!(p(80, 12).covers(p(88, 14)) && !p(88, 14).covers(p(80, 12)));
        assert!(PortPrefix::ANY.covers(p(80, 16)));
    }
}
