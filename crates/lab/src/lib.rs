//! Network-namespace labs: a weft node (and its pods) on one machine, for the
//! demo, the tests and the benchmarks (which live in `weft-bench`).
//!
//! A lab named `P` is made of:
//! - `P-fab`: the fabric namespace with the underlay bridge `br0`
//!   (198.18.0.1/15 and 2001:2::1/64, the RFC 2544 / RFC 5180 ranges);
//! - `P-node`: the node, with underlay `ul0` (198.18.0.10/15, 2001:2::10/64,
//!   default routes via the fabric) and weftd running inside it;
//! - `P-<pod>`: one namespace per pod, attached by executing weft-cni in the
//!   node namespace exactly as a container runtime does.
//!
//! Nothing of a lab is plumbed into the root namespace. Its files live in
//! `/run/weft-lab/P/` (lab.json, weftd's socket, state, spool and log).
//! Setting a lab up uses `ip` (iproute2): this is scaffolding around weft, not
//! weft's data path, which is all netlink.

mod cmd;
pub mod conflist;
pub mod kube;
pub mod kubelet;
mod lab;
pub mod probe;
pub mod sweep;
pub mod traffic;

pub use cmd::{cni_exec, ip, spawn_in_netns, CniOutcome};
pub use lab::{
    pid_alive, EtcdMember, Lab, LabSpec, NodeInfo, Pod, ETCD_BIN, ETCD_CLIENT_PORT, ETCD_PEER_PORT,
    LAB_ROOT, MAX_ETCD_MEMBERS, MAX_NODES,
};

/// Where Debian's containernetworking-plugins put the reference plugins
/// (chained after weft in labs, and weft's rivals in `weft bench cni`).
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";
