//! What IPAM keeps in the store: key layout, the block record, address math.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use weft_store::KeyValue;

use crate::config::{MAX_BLOCK_HOST_BITS, MIN_BLOCK_HOST_BITS};
use crate::{Family, IpamError, PoolConfig};

/// Everything IPAM stores lives under this prefix.
pub const IPAM_PREFIX: &str = "/weft/ipam/v1/";
/// One key per pool: [`PoolConfig`] as JSON.
pub const POOLS_PREFIX: &str = "/weft/ipam/v1/pools/";
/// One key per claimed block: [`BlockRecord`] as JSON.
pub const BLOCKS_PREFIX: &str = "/weft/ipam/v1/blocks/";

/// One key per block: its [`RouteSummary`] as JSON. Outside
/// [`IPAM_PREFIX`] on purpose: every node's route reconciler watches this
/// (small, rarely written) key space instead of the block records, which
/// are large and rewritten on every allocation.
pub const ROUTES_PREFIX: &str = "/weft/cluster/v1/routes/";

/// `10.0.0.0/26` -> `10.0.0.0-26`, `fd00::/122` -> `fd00::-122`.
pub fn escape_cidr(cidr: &IpNet) -> String {
    cidr.to_string().replace('/', "-")
}

pub fn pool_key(cidr: &IpNet) -> String {
    format!("{POOLS_PREFIX}{}", escape_cidr(cidr))
}

pub fn block_key(cidr: &IpNet) -> String {
    format!("{BLOCKS_PREFIX}{}", escape_cidr(cidr))
}

/// The key of a block's [`RouteSummary`] (escaped like [`block_key`]).
pub fn route_key(cidr: &IpNet) -> String {
    format!("{ROUTES_PREFIX}{}", escape_cidr(cidr))
}

/// The block a block key names, if the key is well formed.
pub fn parse_block_key(key: &str) -> Option<IpNet> {
    let rest = key.strip_prefix(BLOCKS_PREFIX)?;
    let (addr, len) = rest.rsplit_once('-')?;
    format!("{addr}/{len}").parse().ok()
}

/// One address handed out.
///
/// Stored compactly (every allocation and release rewrites the whole block
/// record, so its size is paid for on every write): short field names, empty
/// strings, the interface name `eth0` and a zero timestamp left out, and the
/// handle left out when it is
/// the usual `<container_id>/<ifname>` (it is derived back on decoding).
/// The stored fields are described in the crate documentation (store
/// layout); records written with the long field names of earlier versions
/// still decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    pub handle: String,
    pub container_id: String,
    pub ifname: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub allocated_at_ms: u64,
    /// The node that holds the address when it borrowed it from a block of
    /// another node (`None`: the block's own node, the usual case).
    pub node: Option<String>,
}

/// Whether `handle` is `<container_id>/<ifname>`, without building it.
fn is_derived_handle(handle: &str, container_id: &str, ifname: &str) -> bool {
    handle
        .strip_prefix(container_id)
        .and_then(|rest| rest.strip_prefix('/'))
        == Some(ifname)
}

/// An [`Allocation`] as written to the store:
/// `{"h"?, "c"?, "i"?, "ns"?, "n"?, "t"?, "node"?}`.
///
/// - `h`: the handle, only when it is not `<c>/<i>`;
/// - `c`, `i`: container id and interface name (`i` left out when it is
///   `eth0`, written when empty);
/// - `ns`, `n`: the pod's namespace and name;
/// - `t`: when it was allocated, ms since the epoch;
/// - `node`: the borrowing node. It keeps its long name: the agent's route
///   reconciler reads it straight from the block records.
///
/// Every field is optional (empty strings, `eth0`, a zero time and no
/// borrower are left out). On decoding, the long names of the original format (`handle`,
/// `container_id`, `ifname`, `pod_namespace`, `pod_name`, `allocated_at_ms`)
/// are accepted too.
#[derive(Serialize)]
struct StoredAllocationRef<'a> {
    #[serde(rename = "h", skip_serializing_if = "Option::is_none")]
    handle: Option<&'a str>,
    #[serde(rename = "c", skip_serializing_if = "str::is_empty")]
    container_id: &'a str,
    #[serde(rename = "i", skip_serializing_if = "is_default_ifname")]
    ifname: &'a str,
    #[serde(rename = "ns", skip_serializing_if = "str::is_empty")]
    pod_namespace: &'a str,
    #[serde(rename = "n", skip_serializing_if = "str::is_empty")]
    pod_name: &'a str,
    #[serde(rename = "t", skip_serializing_if = "is_zero")]
    allocated_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
}

/// The decoding side of [`StoredAllocationRef`]: the compact names, or the
/// long ones of records written before.
#[derive(Deserialize)]
struct StoredAllocation {
    #[serde(default, rename = "h", alias = "handle")]
    handle: Option<String>,
    #[serde(default, rename = "c", alias = "container_id")]
    container_id: String,
    #[serde(default = "default_ifname", rename = "i", alias = "ifname")]
    ifname: String,
    #[serde(default, rename = "ns", alias = "pod_namespace")]
    pod_namespace: String,
    #[serde(default, rename = "n", alias = "pod_name")]
    pod_name: String,
    #[serde(default, rename = "t", alias = "allocated_at_ms")]
    allocated_at_ms: u64,
    #[serde(default)]
    node: Option<String>,
}

/// The interface name nearly every pod's address is for, left out when
/// stored (an empty name is written as `""`).
const DEFAULT_IFNAME: &str = "eth0";

fn is_default_ifname(ifname: &str) -> bool {
    ifname == DEFAULT_IFNAME
}

fn default_ifname() -> String {
    DEFAULT_IFNAME.to_string()
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Serialize for Allocation {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let derived = is_derived_handle(&self.handle, &self.container_id, &self.ifname);
        StoredAllocationRef {
            handle: (!derived).then_some(self.handle.as_str()),
            container_id: &self.container_id,
            ifname: &self.ifname,
            pod_namespace: &self.pod_namespace,
            pod_name: &self.pod_name,
            allocated_at_ms: self.allocated_at_ms,
            node: self.node.as_deref(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Allocation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Allocation, D::Error> {
        let s = StoredAllocation::deserialize(deserializer)?;
        Ok(Allocation {
            handle: s
                .handle
                .unwrap_or_else(|| crate::handle(&s.container_id, &s.ifname)),
            container_id: s.container_id,
            ifname: s.ifname,
            pod_namespace: s.pod_namespace,
            pod_name: s.pod_name,
            allocated_at_ms: s.allocated_at_ms,
            node: s.node,
        })
    }
}

impl Allocation {
    /// The node that holds this allocation of `rec`: the borrower, else the
    /// block's node.
    pub fn owner<'a>(&'a self, rec: &'a BlockRecord) -> Option<&'a str> {
        self.node.as_deref().or(rec.affinity.as_deref())
    }

    pub(crate) fn holder(&self) -> String {
        if self.pod_name.is_empty() {
            format!("handle {}", self.handle)
        } else {
            format!(
                "pod {}/{} (handle {})",
                self.pod_namespace, self.pod_name, self.handle
            )
        }
    }
}

/// What routing needs of a block, kept under [`route_key`] and written in
/// the same commit as the block whenever it changes (claim, borrow, release
/// of a borrowed address, loss of affinity) or goes (deleted with it), so
/// it never disagrees with the block. Allocations and releases in a node's
/// own block leave it alone: they are invisible to other nodes' routes.
/// JSON: `{"cidr", "affinity": node or null, "borrowed"?: {"<ordinal>":
/// node}}` (`borrowed` left out when empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSummary {
    pub cidr: IpNet,
    #[serde(default)]
    pub affinity: Option<String>,
    /// Ordinal -> the node that borrowed that address of the block.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub borrowed: BTreeMap<u32, String>,
}

impl RouteSummary {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a route summary always encodes")
    }

    pub fn decode(value: &[u8]) -> Result<RouteSummary, serde_json::Error> {
        serde_json::from_slice(value)
    }
}

/// A block claimed by a node: the JSON under `BLOCKS_PREFIX<escaped cidr>`.
/// Ordinals are offsets from the block's first address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRecord {
    pub cidr: IpNet,
    pub pool: IpNet,
    pub affinity: Option<String>,
    #[serde(default)]
    pub allocations: BTreeMap<u32, Allocation>,
    /// Ordinal -> the time (ms since the epoch) it leaves quarantine.
    #[serde(default)]
    pub quarantine: BTreeMap<u32, u64>,
    /// Next-fit cursor: where the search for a free ordinal starts.
    #[serde(default)]
    pub next: u32,
    /// When the last allocation left the block (ms since the epoch); the
    /// grace before an empty block is given back counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emptied_at_ms: Option<u64>,
    /// `"lo": true`: the block's node records its allocations in this block
    /// in its own local journal first and writes them here later (at most
    /// a flush interval later, see the crate docs, "Local allocations"), so
    /// a free ordinal here may be taken: nobody else allocates in it (no
    /// borrowing). Left out when false.
    #[serde(default, rename = "lo", skip_serializing_if = "is_false")]
    pub local: bool,
}

fn is_false(v: &bool) -> bool {
    !*v
}

impl BlockRecord {
    pub fn new(cidr: IpNet, pool: IpNet, affinity: Option<String>) -> BlockRecord {
        BlockRecord {
            cidr,
            pool,
            affinity,
            allocations: BTreeMap::new(),
            quarantine: BTreeMap::new(),
            next: 0,
            emptied_at_ms: None,
            local: false,
        }
    }

    pub fn family(&self) -> Family {
        Family::of_net(&self.cidr)
    }

    /// The block's owner and borrowed addresses, for routing.
    pub fn route_summary(&self) -> RouteSummary {
        RouteSummary {
            cidr: self.cidr,
            affinity: self.affinity.clone(),
            borrowed: self.borrowed().map(|(o, n)| (o, n.to_string())).collect(),
        }
    }

    /// Whether `other` routes like this record (same [`RouteSummary`]),
    /// without building the summaries (this runs on every block write).
    pub fn same_routes(&self, other: &BlockRecord) -> bool {
        self.cidr == other.cidr
            && self.affinity == other.affinity
            && self.borrowed().eq(other.borrowed())
    }

    /// Ordinal and borrowing node of every borrowed address, by ordinal.
    fn borrowed(&self) -> impl Iterator<Item = (u32, &str)> {
        self.allocations
            .iter()
            .filter_map(|(&o, a)| Some((o, a.node.as_deref()?)))
    }

    /// Addresses in the block (a decoded record has at most 4096).
    pub fn size(&self) -> u32 {
        1u32 << (self.cidr.max_prefix_len() - self.cidr.prefix_len()).min(MAX_BLOCK_HOST_BITS)
    }

    /// The address at `ordinal`. An ordinal outside the block (only in a
    /// damaged record, which [`crate::Ipam::check`] reports) gives an address
    /// outside it, wrapping at the top of the address space, never a panic.
    pub fn addr(&self, ordinal: u32) -> IpAddr {
        from_u128(
            self.family(),
            to_u128(self.cidr.network()).wrapping_add(u128::from(ordinal)),
        )
    }

    pub fn ordinal(&self, addr: IpAddr) -> Option<u32> {
        if !self.cidr.contains(&addr) {
            return None;
        }
        u32::try_from(to_u128(addr) - to_u128(self.cidr.network())).ok()
    }

    /// Ordinal inside the block and not reserved by the pool.
    pub fn usable(&self, ordinal: u32) -> bool {
        ordinal < self.size() && !reserved(&self.pool, self.addr(ordinal))
    }

    /// Addresses of the block that can ever be handed out.
    pub fn capacity(&self) -> u64 {
        let reserved = [self.pool.network(), self.pool.broadcast()]
            .into_iter()
            .enumerate()
            .filter(|&(i, a)| (i == 0 || self.family() == Family::V4) && self.cidr.contains(&a))
            .count() as u64;
        u64::from(self.size()) - reserved
    }

    pub fn is_quarantined(&self, ordinal: u32, now_ms: u64) -> bool {
        self.quarantine
            .get(&ordinal)
            .is_some_and(|&until| until > now_ms)
    }

    pub fn is_free(&self, ordinal: u32, now_ms: u64) -> bool {
        self.usable(ordinal)
            && !self.allocations.contains_key(&ordinal)
            && !self.is_quarantined(ordinal, now_ms)
    }

    /// Next fit: the first free ordinal at or after the cursor, wrapping.
    pub fn pick_free(&self, now_ms: u64) -> Option<u32> {
        let size = self.size();
        let start = self.next % size;
        (start..size)
            .chain(0..start)
            .find(|&o| self.is_free(o, now_ms))
    }

    /// Quarantine entries still in force.
    pub fn active_quarantine(&self, now_ms: u64) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.quarantine
            .iter()
            .filter(move |(_, &until)| until > now_ms)
            .map(|(&o, &u)| (o, u))
    }

    /// Drops quarantine entries that have expired.
    pub fn prune(&mut self, now_ms: u64) {
        self.quarantine.retain(|_, until| *until > now_ms);
    }

    pub(crate) fn encode(&self, key: &str) -> Result<Vec<u8>, IpamError> {
        serde_json::to_vec(self).map_err(|e| IpamError::Corrupt {
            key: key.to_string(),
            reason: format!("cannot encode the block record: {e}"),
        })
    }

    /// Decodes and sanity-checks a block from the store.
    pub fn decode(kv: &KeyValue) -> Result<BlockRecord, IpamError> {
        let corrupt = |reason: String| IpamError::Corrupt {
            key: kv.key.clone(),
            reason,
        };
        let rec: BlockRecord = serde_json::from_slice(&kv.value)
            .map_err(|e| corrupt(format!("undecodable block record: {e}")))?;
        if block_key(&rec.cidr) != kv.key {
            return Err(corrupt(format!(
                "the record describes block {} but sits under another key",
                rec.cidr
            )));
        }
        if rec.cidr.trunc() != rec.cidr {
            return Err(corrupt(format!("block {} has host bits set", rec.cidr)));
        }
        if Family::of_net(&rec.pool) != rec.family() || !rec.pool.contains(&rec.cidr) {
            return Err(corrupt(format!(
                "block {} is not inside its pool {}",
                rec.cidr, rec.pool
            )));
        }
        let host_bits = rec.cidr.max_prefix_len() - rec.cidr.prefix_len();
        if !(MIN_BLOCK_HOST_BITS..=MAX_BLOCK_HOST_BITS).contains(&host_bits) {
            return Err(corrupt(format!(
                "block {} has a size weft does not use (4 to 4096 addresses)",
                rec.cidr
            )));
        }
        Ok(rec)
    }
}

/// The pool's first address, and for IPv4 its last, are never handed out.
pub fn reserved(pool: &IpNet, addr: IpAddr) -> bool {
    addr == pool.network() || (Family::of_net(pool) == Family::V4 && addr == pool.broadcast())
}

/// Addresses of the pool that can be handed out (saturating).
pub(crate) fn pool_capacity(pool: &PoolConfig) -> u64 {
    let bits = pool.cidr.max_prefix_len() - pool.cidr.prefix_len();
    let size = if bits >= 64 { u64::MAX } else { 1u64 << bits };
    let reserved = if pool.family() == Family::V4 { 2 } else { 1 };
    size.saturating_sub(reserved)
}

pub(crate) fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

pub(crate) fn from_u128(family: Family, v: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// The `index`th block of `pool`.
pub(crate) fn nth_block(pool: &PoolConfig, index: u128) -> IpNet {
    let host_bits = pool.cidr.max_prefix_len() - pool.block_prefix;
    let base = to_u128(pool.cidr.network()) + (index << host_bits);
    IpNet::new(from_u128(pool.family(), base), pool.block_prefix)
        .expect("block prefix validated against the family")
}

/// Index of `block` inside `pool`.
pub(crate) fn block_index(pool: &PoolConfig, block: &IpNet) -> u128 {
    let host_bits = pool.cidr.max_prefix_len() - pool.block_prefix;
    (to_u128(block.network()) - to_u128(pool.cidr.network())) >> host_bits
}

/// The block of `pool` that contains `addr`.
pub(crate) fn block_of(pool: &PoolConfig, addr: IpAddr) -> IpNet {
    IpNet::new(addr, pool.block_prefix)
        .expect("block prefix validated against the family")
        .trunc()
}
