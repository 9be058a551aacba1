//! Services without kube-proxy: the kernel half (issue 13).
//!
//! - [`ServicePrograms`] loads the socket-level load balancer
//!   (`bpf/sock_lb.bpf.c`: cgroup `connect4/6`, `sendmsg4/6`, `recvmsg4/6`,
//!   `getpeername4/6`) and the NodePort translator (`bpf/nodeport.bpf.c`:
//!   tcx ingress and egress of the node's external devices), and attaches
//!   them: the socket hooks to one cgroup v2 directory (the loader's
//!   `cgroup_root`; in production the root of the cgroup2 mount, so every
//!   pod and the node itself; tests use a private directory), the tc pair to
//!   the devices traffic from outside the node arrives on.
//! - [`ServiceMaps`] is the maps those programs read, written through
//!   [`weft_lb::MapWriter`] (what [`weft_lb::reconcile`] applies) and read
//!   back as [`LbMaps`] (for `weft services` and [`weft_lb::IdAllocator::restore`]).
//!   [`FakeServiceMaps`] is the same seam in memory, with injectable failures.
//! - [`encode`] converts between `weft_lb`'s entries and `weft/lb.h`.
//!
//! Every map is pinned (with a pin directory): a restarted weftd finds the
//! service maps, their IDs, the affinity and NAT state where it left them,
//! and the old programs serve until the new ones replace them on each hook.

pub mod encode;
mod fake;
mod kernel;
pub mod programs;
pub mod sockdiag;

use std::net::IpAddr;

use weft_bpf_abi::LbStats;
use weft_lb::{BackendId, LbMaps, MapWriter, ServiceId};

pub use encode::AffinityClient;
pub use fake::FakeServiceMaps;
pub use kernel::ServiceMaps;
pub use programs::{
    default_cgroup_root, detach_cgroup, detach_devices, ServiceProgramOptions, ServicePrograms,
    NODEPORT_IN, NODEPORT_OUT, SOCK_PROGRAMS,
};

/// What can go wrong with the Service maps and programs.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Bpf(#[from] weft_bpf::BpfError),
    /// A map entry that does not decode (written by another weft version?).
    #[error("service map entry: unknown {0}; restart weftd to rebuild the maps")]
    Decode(String),
    #[error("maglev table of {m} entries exceeds the maps' {max}; use a smaller table size")]
    MaglevTooLarge { m: usize, max: usize },
    /// The cgroup the socket programs go to is not a cgroup v2 directory.
    #[error("cgroup root {0}: not a cgroup v2 directory (no cgroup.procs); give the unified hierarchy's root (e.g. /sys/fs/cgroup) or a cgroup the clients run in")]
    NotCgroup2(String),
    /// Listing or aborting sockets over NETLINK_SOCK_DIAG failed.
    #[error("{0}; weftd needs CAP_NET_ADMIN and a kernel with CONFIG_INET_DIAG_DESTROY")]
    SockDiag(String),
    /// A write the fake was told to fail.
    #[error("injected failure: {0}")]
    Injected(String),
}

impl ServiceError {
    pub(crate) fn decode(what: String) -> Self {
        ServiceError::Decode(what)
    }
}

/// The programs' Service counters (`enum weft_lb_stat`), summed over CPUs.
pub type ServiceStats = LbStats;

/// One ClientIP affinity entry as the programs recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AffinityEntry {
    pub client: AffinityClient,
    pub service_id: ServiceId,
    pub backend_id: BackendId,
    /// Seconds of CLOCK_MONOTONIC of the client's last new flow.
    pub last_seen: u64,
}

/// The Service maps as weftd's reconciler uses them: the kernel's
/// ([`ServiceMaps`]) or a fake ([`FakeServiceMaps`]).
pub trait ServiceTable: MapWriter<Error = ServiceError> {
    /// Everything the service, backend, reverse-NAT and Maglev maps hold.
    fn read_back(&self) -> Result<LbMaps, ServiceError>;
    /// Makes the node-address set (where NodePorts answer) exactly `addrs`.
    fn set_node_addrs(&mut self, addrs: &[IpAddr]) -> Result<(), ServiceError>;
    /// The ClientIP affinity entries.
    fn affinity(&self) -> Result<Vec<AffinityEntry>, ServiceError>;
    /// The programs' counters.
    fn counters(&self) -> Result<ServiceStats, ServiceError>;
}

/// Seconds of CLOCK_MONOTONIC, the clock affinity entries are stamped with.
pub fn monotonic_secs() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`, which is valid.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64
}
