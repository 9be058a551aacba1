//! The policy map's key and its LPM layout.
//!
//! ```text
//!  bytes   0..4        4           5          6..8
//!        identity    direction   protocol    port
//!        (be32)      0 in/1 out  (IP proto)  (be16)
//! ```
//! One LPM trie per endpoint; the prefix length counts bits of those 8
//! bytes: 40 (identity + direction: every protocol and port), 48 (one
//! protocol, every port), 48 + n (one protocol, ports sharing their n
//! leading bits; 64 is one port). A lookup with the full 64-bit key returns
//! the most specific entry, so exact ports, then range blocks, then
//! wildcards are tried in one trie walk. The program looks up twice: the
//! peer's identity, then [`Identity::ANY`] (rules with no peers).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::identity::Identity;
use crate::model::Direction;
use crate::ports::PortPrefix;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PolicyKey {
    pub identity: Identity,
    pub direction: Direction,
    /// IP protocol number; `None` = every protocol (and then every port).
    pub proto: Option<u8>,
    pub port: PortPrefix,
}

impl Serialize for PortPrefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.port, self.len).serialize(s)
    }
}

impl<'de> Deserialize<'de> for PortPrefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (port, len) = <(u16, u8)>::deserialize(d)?;
        Ok(PortPrefix { port, len })
    }
}

impl PolicyKey {
    pub fn all_protocols(identity: Identity, direction: Direction) -> Self {
        PolicyKey {
            identity,
            direction,
            proto: None,
            port: PortPrefix::ANY,
        }
    }

    /// Bits of the 8-byte key the entry fixes.
    pub fn prefix_len(&self) -> u32 {
        match self.proto {
            None => 40,
            Some(_) => 48 + u32::from(self.port.len),
        }
    }

    /// The bytes as the BPF map holds them (after the u32 prefix length).
    pub fn to_bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&self.identity.0.to_be_bytes());
        b[4] = match self.direction {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        };
        b[5] = self.proto.unwrap_or(0);
        b[6..8].copy_from_slice(&self.port.port.to_be_bytes());
        b
    }

    /// Whether every packet this entry's key `other` matches also matches
    /// `self` (same identity and direction, shorter or equal prefix).
    pub fn covers(&self, other: &PolicyKey) -> bool {
        self.identity == other.identity
            && self.direction == other.direction
            && match (self.proto, other.proto) {
                (None, _) => true,
                (Some(a), Some(b)) => a == b && self.port.covers(other.port),
                (Some(_), None) => false,
            }
    }

    /// The keys an LPM lookup of (identity, direction, proto, port) can hit,
    /// most specific first.
    pub fn lookup_chain(
        identity: Identity,
        direction: Direction,
        proto: u8,
        port: u16,
    ) -> impl Iterator<Item = PolicyKey> {
        (0..=16u8)
            .rev()
            .map(move |len| {
                let mask = if len == 0 { 0 } else { u16::MAX << (16 - len) };
                PolicyKey {
                    identity,
                    direction,
                    proto: Some(proto),
                    port: PortPrefix {
                        port: port & mask,
                        len,
                    },
                }
            })
            .chain(std::iter::once(PolicyKey::all_protocols(
                identity, direction,
            )))
    }
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = if self.identity == Identity::ANY {
            "any".to_string()
        } else {
            self.identity.to_string()
        };
        write!(f, "{} {who} ", self.direction)?;
        match self.proto {
            None => write!(f, "any"),
            Some(p) => {
                let name = match p {
                    6 => "tcp".to_string(),
                    17 => "udp".to_string(),
                    132 => "sctp".to_string(),
                    n => format!("proto-{n}"),
                };
                let (lo, hi) = self.port.bounds();
                match self.port.len {
                    0 => write!(f, "{name}/any"),
                    16 => write!(f, "{name}/{lo}"),
                    _ => write!(f, "{name}/{lo}-{hi}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_layout_and_prefix_lengths() {
        let k = PolicyKey {
            identity: Identity(0x0102_0304),
            direction: Direction::Egress,
            proto: Some(6),
            port: PortPrefix { port: 80, len: 12 },
        };
        assert_eq!(k.to_bytes(), [1, 2, 3, 4, 1, 6, 0, 80]);
        assert_eq!(k.prefix_len(), 60);
        assert_eq!(
            PolicyKey::all_protocols(Identity(7), Direction::Ingress).prefix_len(),
            40
        );
        assert_eq!(k.to_string(), "egress 16909060 tcp/80-95");
    }

    #[test]
    fn lookup_chain_is_every_covering_prefix_longest_first() {
        let chain: Vec<_> =
            PolicyKey::lookup_chain(Identity(9), Direction::Ingress, 6, 81).collect();
        assert_eq!(chain.len(), 18);
        assert_eq!(chain[0].port, PortPrefix::exact(81));
        assert_eq!(chain[16].port, PortPrefix::ANY);
        assert_eq!(chain[17].proto, None);
        let prefix_lens: Vec<u32> = chain.iter().map(|k| k.prefix_len()).collect();
        assert!(prefix_lens.windows(2).all(|w| w[0] > w[1]));
        for k in &chain {
            assert!(k.covers(&chain[0]), "{k} must cover the exact key");
        }
    }
}
