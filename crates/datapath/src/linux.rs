//! The real data path: rtnetlink in the agent's netns and the pods' netns.
//! This file holds the type and its sockets; each seam is implemented in a
//! file of its own (`links.rs`, `node.rs`, `peers.rs`, `fast.rs`).

use std::collections::HashMap;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use crate::error::DatapathError;

mod fast;
mod links;
mod node;
mod peers;
use crate::fastpath::FastPath;
use crate::netlink::{self as nl, LinkMsg, Request, RouteSpec};
use crate::netns;
use crate::nlsock::Socket;
use crate::routing::{self, Plan, Vtep};
use crate::{
    format_mac, sysctl, validate_ifname, Attached, HostLink, NodeSetup, OverlaySetup, PeerNode,
    PodLink, RoutingMode, SyncReport, GATEWAY_V4, GATEWAY_V6, HOST_VETH_MAC,
};

/// How many requests `sync_peers` sends per datagram: every request is acked,
/// and the acks of one batch must fit the socket's receive buffer.
const SYNC_BATCH: usize = 64;

/// How many idle node sockets to keep for concurrent callers.
const POOL_MAX: usize = 8;

/// The Linux data path. Works on the network namespace that was current for
/// the thread that called [`LinuxDatapath::new`] (the node netns), whatever
/// thread calls it later.
#[derive(Debug)]
pub struct LinuxDatapath {
    node_ns: OwnedFd,
    node_id: (u64, u64),
    pool: Mutex<Vec<Socket>>,
    /// Pod-side sockets `create_link` opened, handed to `configure_link` so
    /// the second half of an ADD does not enter the pod netns again. An entry
    /// lives from create to configure or detach.
    handoff: Mutex<HashMap<String, Handoff>>,
    /// The eBPF fast path, once `fastpath_start` loaded it (boxed: it is large,
    /// and LinuxDatapath is held by value in enums elsewhere).
    fast: Mutex<Option<Box<FastPath>>>,
    /// Where the fast path's pinned maps live (one directory per agent
    /// instance, on bpffs); `None`: nothing is pinned.
    pin_dir: Option<PathBuf>,
    /// Whether the programs `fastpath_start` loads enforce NetworkPolicy.
    policy: crate::policy::PolicyMode,
    /// Whether they report flow events (weftd `--flows`).
    flow_events: bool,
}

/// What `create_link` learnt that `configure_link` needs.
#[derive(Debug)]
struct Handoff {
    netns: PathBuf,
    pod: Socket,
    peer: LinkMsg,
}

fn prefix_len(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

fn is_errno(e: &DatapathError, errno: i32) -> bool {
    matches!(e, DatapathError::Netlink { errno: n, .. } if *n == errno)
}

/// The addresses of a pod link, v4 first.
fn pod_ips(link: &PodLink) -> Vec<IpAddr> {
    link.ipv4
        .map(IpAddr::V4)
        .into_iter()
        .chain(link.ipv6.map(IpAddr::V6))
        .collect()
}

impl LinuxDatapath {
    /// Opens an rtnetlink socket in the calling thread's current netns and
    /// remembers that netns as the node netns.
    pub fn new() -> Result<Self, DatapathError> {
        let node_ns: OwnedFd = File::open(netns::THREAD_NETNS)
            .map_err(|e| DatapathError::io("open netns", netns::THREAD_NETNS, e))?
            .into();
        let node_id = netns::identity(node_ns.as_fd())
            .map_err(|e| DatapathError::io("fstat netns", netns::THREAD_NETNS, e))?;
        let sock = Socket::open()?;
        Ok(LinuxDatapath {
            node_ns,
            node_id,
            pool: Mutex::new(vec![sock]),
            handoff: Mutex::new(HashMap::new()),
            fast: Mutex::new(None),
            pin_dir: None,
            policy: Default::default(),
            flow_events: true,
        })
    }

    /// Pins the fast path's long-lived maps (today the counters) under
    /// `dir`, one directory per agent instance on bpffs, so they outlive an
    /// agent restart; re-used while their layout matches, replaced when not.
    /// `None` (the default): every start begins with fresh maps.
    pub fn with_bpf_pin_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.pin_dir = dir;
        self
    }

    /// Loads the programs of `fastpath_start` with policy in `mode`
    /// (default off). [`PolicyMode::EnforceOnly`](crate::policy::PolicyMode)
    /// is for `--fastpath off` with policy on: start and sync the programs
    /// all the same, they judge and forward nothing.
    pub fn with_policy(mut self, mode: crate::policy::PolicyMode) -> Self {
        self.policy = mode;
        self
    }

    /// Whether the programs of `fastpath_start` report flow events (default
    /// on); off, the policy programs still count drops.
    pub fn with_flow_events(mut self, on: bool) -> Self {
        self.flow_events = on;
        self
    }

    fn on_node_thread(&self) -> bool {
        netns::current_identity().ok() == Some(self.node_id)
    }

    fn open_node_socket(&self) -> Result<Socket, DatapathError> {
        if self.on_node_thread() {
            Socket::open()
        } else {
            netns::with_netns(self.node_ns.as_fd(), Path::new("node netns"), Socket::open)?
        }
    }

    /// Runs `f` with a socket in the node netns, taken from (and given back
    /// to) a small pool so concurrent callers do not serialise on one socket.
    fn with_node<T>(
        &self,
        f: impl FnOnce(&mut Socket) -> Result<T, DatapathError>,
    ) -> Result<T, DatapathError> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut sock = match pooled {
            Some(s) => s,
            None => self.open_node_socket()?,
        };
        let r = f(&mut sock);
        // A socket that saw a send/receive failure may hold unread answers.
        if !sock.is_broken() {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < POOL_MAX {
                pool.push(sock);
            }
        }
        r
    }

    /// Runs `f` on a thread in the node netns (for `/proc/sys/net`).
    fn in_node_ns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, DatapathError> {
        if self.on_node_thread() {
            Ok(f())
        } else {
            netns::run_in_fd(self.node_ns.as_fd(), Path::new("node netns"), f)
        }
    }

    fn get_link(
        sock: &mut Socket,
        name: &str,
        what: String,
    ) -> Result<Option<LinkMsg>, DatapathError> {
        match sock.get_one(&Request::new(nl::get_link_by_name(name), what)) {
            Ok(p) => Ok(nl::parse_link(&p)),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The whole `RTM_NEWLINK` answer for a link by name (for `parse_vxlan`).
    fn get_link_payload(
        sock: &mut Socket,
        name: &str,
    ) -> Result<Option<nl::Message>, DatapathError> {
        match sock.get_one(&Request::new(
            nl::get_link_by_name(name),
            format!("link {name}"),
        )) {
            Ok(p) => Ok(Some(p)),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn del_link(sock: &mut Socket, name: &str) -> Result<bool, DatapathError> {
        match sock.request(&Request::new(
            nl::del_link_by_name(name),
            format!("veth {name}"),
        )) {
            Ok(_) => Ok(true),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
