//! The agent's logic: the CNI verbs and the read-only views, over the IPAM,
//! the endpoint table and the data-path seam. No sockets here (see server.rs),
//! so all of it runs in unit tests with a recording data path and an in-memory
//! store.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use weft_api::{
    AddRequest, AgentStatus, AllocationView, Attachment, BlockView, CheckRequest, DelRequest,
    IpamCheckReport, IpamView, PoolUsage, StatusRequest,
};
use weft_cni_spec::{codes, CniError, Interface, IpConfig, NeutralResult, Route};
use weft_datapath::{format_mac, Datapath, DatapathError, PodLink, GATEWAY_V4, GATEWAY_V6};
use weft_ipam::{AllocRequest, AllocationAttrs, Ipam, IpamError};
use weft_store::StoreError;

use crate::endpoint::Endpoint;
use crate::endpoints::{EndpointError, Endpoints};
use crate::fastpath_state::FastPathState;
use crate::fault;
use crate::naming::host_ifname;
use crate::teardown::Teardown;

/// How long an ADD waits for the deferred teardown of the same attachment.
const TEARDOWN_WAIT: Duration = Duration::from_secs(10);
/// Operations on one container are serialised through one of these stripes;
/// different containers almost always land on different stripes and run
/// concurrently.
const LOCK_STRIPES: usize = 1024;

/// Facts about the node fixed at start-up.
#[derive(Debug, Clone)]
pub struct NodeFacts {
    pub node: String,
    pub socket: String,
    pub pod_mtu: u32,
    pub underlay: Option<String>,
    pub nat_outgoing: bool,
    pub store_backend: String,
    /// How old an attachment must be before a CNI GC may collect it: the
    /// runtime's list of valid attachments is a snapshot that can predate an
    /// ADD that just finished.
    pub gc_attachment_grace: Duration,
}

pub struct Agent {
    facts: NodeFacts,
    ipam: Ipam,
    endpoints: Arc<Endpoints>,
    datapath: Arc<dyn Datapath>,
    teardown: Teardown,
    stripes: Vec<Mutex<()>>,
    started: Instant,
    spool_replayed: Mutex<usize>,
    fastpath: FastPathState,
    kubernetes: crate::k8s::Link,
    flows: crate::flows::Link,
    policy: crate::policy::Link,
    services: crate::services::Link,
}

impl Agent {
    pub fn new(
        facts: NodeFacts,
        ipam: Ipam,
        endpoints: Endpoints,
        datapath: Arc<dyn Datapath>,
    ) -> Agent {
        let endpoints = Arc::new(endpoints);
        Agent {
            facts,
            ipam,
            teardown: Teardown::start(datapath.clone(), endpoints.clone()),
            endpoints,
            datapath,
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            started: Instant::now(),
            spool_replayed: Mutex::new(0),
            fastpath: FastPathState::default(),
            kubernetes: crate::k8s::Link::default(),
            flows: crate::flows::Link::default(),
            policy: crate::policy::Link::default(),
            services: crate::services::Link::default(),
        }
    }

    pub fn facts(&self) -> &NodeFacts {
        &self.facts
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    pub fn datapath(&self) -> &Arc<dyn Datapath> {
        &self.datapath
    }

    pub fn fastpath(&self) -> &FastPathState {
        &self.fastpath
    }

    /// Flow observation (`weft observe`), once started.
    pub fn flows(&self) -> &crate::flows::Link {
        &self.flows
    }

    /// NetworkPolicy enforcement (see policy/), once started.
    pub fn policy(&self) -> &crate::policy::Link {
        &self.policy
    }

    /// The Kubernetes adapter, when weftd runs with one (see k8s.rs).
    pub fn kubernetes(&self) -> &crate::k8s::Link {
        &self.kubernetes
    }

    pub fn services(&self) -> &crate::services::Link {
        &self.services
    }

    /// Whether `host_ifname` waits in the teardown queue.
    pub(crate) fn teardown_pending(&self, host_ifname: &str) -> bool {
        self.teardown.is_pending(host_ifname)
    }

    pub(crate) fn add_spool_replayed(&self, n: usize) {
        *self
            .spool_replayed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) += n;
    }

    pub(crate) fn lock_container(&self, container_id: &str) -> MutexGuard<'_, ()> {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in container_id.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.stripes[(h % LOCK_STRIPES as u64) as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// CNI ADD: allocate, wire, record. Idempotent for the same attachment and netns.
    pub fn add(&self, req: &AddRequest) -> Result<NeutralResult, CniError> {
        validate_attachment(&req.attachment)?;
        if req.netns.is_empty() {
            return Err(CniError::new(
                codes::INVALID_ENV,
                "CNI_NETNS is empty; ADD needs the container's network namespace path",
            ));
        }
        if !req.want_ipv4 && !req.want_ipv6 {
            return Err(CniError::new(
                codes::INVALID_NETWORK_CONFIG,
                "ipFamilies is empty; ask for ipv4, ipv6 or both",
            ));
        }
        let host = host_ifname(&req.attachment);
        if !self.teardown.wait_clear(&host, TEARDOWN_WAIT) {
            return Err(CniError::new(
                codes::TRY_AGAIN_LATER,
                format!("the previous interface {host} of this container is still being torn down; retry shortly"),
            ));
        }
        let _guard = self.lock_container(&req.attachment.container_id);

        if let Some(ep) = self.endpoints.get(&req.attachment) {
            if ep.netns == req.netns {
                return Ok(result_of(&ep));
            }
            if !Path::new(&ep.netns).exists() {
                // The recorded container is gone and its DEL never came
                // (`ctr run -d` never sends one; containerd names netns by
                // /proc/<pid>/ns/net, which vanishes with the task): the
                // name is being reused. Forget the dead one, then add.
                self.del_locked(&DelRequest {
                    attachment: ep.attachment.clone(),
                    netns: String::new(),
                    network: ep.network.clone(),
                })?;
                tracing::info!(container = %req.attachment.container_id, stale_netns = %ep.netns,
                    "replaced an attachment whose netns is gone");
                if !self.teardown.wait_clear(&ep.host_ifname, TEARDOWN_WAIT) {
                    return Err(CniError::new(
                        codes::TRY_AGAIN_LATER,
                        format!("the previous interface {} of this container is still being torn down; retry shortly", ep.host_ifname),
                    ));
                }
            } else {
                return Err(CniError::new(
                    codes::INVALID_ENV,
                    format!(
                        "container {} already has {} in netns {}; DEL it before adding it to {}",
                        req.attachment.container_id, req.attachment.ifname, ep.netns, req.netns
                    ),
                ));
            }
        }
        if !Path::new(&req.netns).exists() {
            return Err(CniError::new(
                codes::INVALID_ENV,
                format!(
                    "network namespace {} does not exist; was the container stopped?",
                    req.netns
                ),
            ));
        }
        // before anything is allocated or made: the node's own namespace (or
        // anything that is not a network namespace) is never a pod's
        self.datapath
            .check_pod_netns(Path::new(&req.netns))
            .map_err(datapath_error)?;
        check_requested_ips(&req.requested_ips)?;

        let attrs = alloc_attrs(req);
        let alloc_req = AllocRequest {
            ipv4: req.want_ipv4,
            ipv6: req.want_ipv6,
            requested: req.requested_ips.clone(),
        };
        let mtu = req.mtu.unwrap_or(self.facts.pod_mtu);
        let mut link = PodLink {
            netns: req.netns.clone().into(),
            ifname: req.attachment.ifname.clone(),
            host_ifname: host.clone(),
            mtu,
            ipv4: None,
            ipv6: None,
        };

        // Stage 1: the kernel makes the veth pair while IPAM makes its durable
        // write; neither needs the other's answer.
        let started = Instant::now();
        let (created, allocated) = std::thread::scope(|s| {
            let creating = s.spawn(|| timed(|| self.datapath.create_link(&link)));
            let allocated = timed(|| self.ipam.allocate(&attrs, &alloc_req));
            (join(creating), allocated)
        });
        let ((created, create_us), (allocated, ipam_us)) = (created, allocated);
        let (created, allocated) = match (created, allocated) {
            (Ok(c), Ok(a)) => (c, a),
            (created, Err(e)) => {
                if created.is_ok() {
                    self.teardown.schedule(host, None);
                }
                return Err(ipam_error(e));
            }
            (Err(e), Ok(_)) => {
                self.rollback(&attrs);
                return Err(datapath_error(e));
            }
        };
        link.ipv4 = allocated.iter().find_map(|a| match a.addr {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        });
        link.ipv6 = allocated.iter().find_map(|a| match a.addr {
            IpAddr::V6(v6) => Some(v6),
            IpAddr::V4(_) => None,
        });
        let ep = Endpoint {
            attachment: req.attachment.clone(),
            pod: req.pod.clone(),
            network: req.network.clone(),
            netns: req.netns.clone(),
            host_ifname: host,
            mac: created.pod_mac,
            mtu,
            ips: allocated.iter().map(|a| IpNet::from(a.addr)).collect(),
            created_at: unix_now(),
        };

        // Stage 2: addresses and routes go in while the endpoint is recorded.
        let stage1_us = started.elapsed().as_micros() as u64;
        let (configured, recorded) = std::thread::scope(|s| {
            let recording = s.spawn(|| self.endpoints.put(ep.clone()));
            let configured = self.datapath.configure_link(&link);
            (configured, join(recording))
        });
        // where an ADD's time goes, for whoever chases latency (RUST_LOG/--log debug)
        tracing::debug!(
            create_us,
            ipam_us,
            stage1_us,
            stage2_us = started.elapsed().as_micros() as u64 - stage1_us,
            "add timing"
        );
        match (configured, recorded) {
            (Ok(_), Ok(())) => {}
            (Err(e), recorded) => {
                // configure_link removed the pair; undo the record and the addresses
                if recorded.is_ok() {
                    if let Err(re) = self.endpoints.remove(&req.attachment) {
                        tracing::warn!(error = %re, "could not forget the endpoint of a failed ADD; reconciliation will");
                    }
                }
                self.rollback(&attrs);
                return Err(datapath_error(e));
            }
            (Ok(_), Err(e)) => {
                self.teardown.schedule(ep.host_ifname.clone(), None);
                self.rollback(&attrs);
                return Err(endpoint_error(e));
            }
        }
        // no open window: the pod's policy state is in the maps before the
        // runtime learns the pod is wired (policy/mod.rs)
        if let Err(msg) = self.policy.admit(self, &ep) {
            if let Err(re) = self.endpoints.remove(&req.attachment) {
                tracing::warn!(error = %re, "could not forget the endpoint of a failed ADD; reconciliation will");
            }
            self.teardown.schedule(ep.host_ifname.clone(), None);
            self.rollback(&attrs);
            return Err(CniError::new(codes::DATAPATH_FAILURE, msg));
        }
        tracing::info!(container = %req.attachment.container_id, ifname = %req.attachment.ifname,
            pod = %format!("{}/{}", req.pod.namespace, req.pod.name), ips = ?ep.ips, "added");
        Ok(result_of(&ep))
    }

    /// Gives back, without quarantine, what a failed ADD allocated: the
    /// addresses never reached a running pod.
    fn rollback(&self, attrs: &AllocationAttrs) {
        if let Err(e) = self.ipam.rollback(&attrs.handle()) {
            tracing::warn!(error = %e, "could not roll back addresses of a failed ADD; gc will collect them");
        }
    }

    /// CNI DEL: mark the endpoint deleting, release the addresses, queue the
    /// veth for teardown (which forgets the endpoint once the veth is gone).
    /// Succeeds for anything already gone.
    pub fn del(&self, req: &DelRequest) -> Result<(), CniError> {
        validate_attachment(&req.attachment)?;
        let _guard = self.lock_container(&req.attachment.container_id);
        self.del_locked(req)
    }

    /// DEL under the container's lock, which the caller holds. The order is
    /// what makes a crash at any step harmless: the record is marked
    /// deleting (durably) before anything is given up, and forgotten only
    /// after the interface is gone, so while the pod may still hold its
    /// addresses a record says so, and start-up finishes any DEL it finds
    /// begun ([`crate::reconcile::finish_deletes`]).
    pub(crate) fn del_locked(&self, req: &DelRequest) -> Result<(), CniError> {
        let handle = AllocationAttrs {
            container_id: req.attachment.container_id.clone(),
            ifname: req.attachment.ifname.clone(),
            pod_namespace: String::new(),
            pod_name: String::new(),
        }
        .handle();
        let ep = self
            .endpoints
            .begin_delete(&req.attachment)
            .map_err(endpoint_error)?;
        fault::point("del-marked");
        if let (Some(e), true) = (&ep, self.fastpath.is_active()) {
            // the programs must stop steering to this pod before its veth goes
            let ips: Vec<IpAddr> = e.ips.iter().map(|n| n.addr()).collect();
            if let Err(err) = self.datapath.fastpath_forget(&ips) {
                tracing::warn!(error = %err, "fast path: cannot forget a deleted pod's addresses; the next sync will");
            }
        }
        // release even without an endpoint: an ADD may have allocated and then
        // failed or crashed before recording it. On failure the record stays
        // marked deleting (its addresses stay held): the DEL is retried or
        // replayed from the spool, or finished at the next start.
        let released = self.ipam.release(&handle).map_err(ipam_error)?;
        fault::point("del-released");
        let host = ep
            .as_ref()
            .map(|e| e.host_ifname.clone())
            .unwrap_or_else(|| host_ifname(&req.attachment));
        self.teardown
            .schedule(host, ep.as_ref().map(|e| e.attachment.clone()));
        tracing::info!(container = %req.attachment.container_id, ifname = %req.attachment.ifname, released = ?released, "deleted");
        Ok(())
    }

    /// CNI CHECK: the attachment exists and the kernel still matches it.
    pub fn check(&self, req: &CheckRequest) -> Result<(), CniError> {
        validate_attachment(&req.attachment)?;
        let _guard = self.lock_container(&req.attachment.container_id);
        let Some(ep) = self.endpoints.get(&req.attachment) else {
            return Err(CniError::new(
                codes::UNKNOWN_CONTAINER,
                format!(
                    "weft has no attachment {} of container {}; ADD it first",
                    req.attachment.ifname, req.attachment.container_id
                ),
            ));
        };
        let mut problems = Vec::new();
        if let Some(prev) = &req.prev_result {
            for ip in &ep.ips {
                if !prev.ips.iter().any(|p| p.address.addr() == ip.addr()) {
                    problems.push(format!("prevResult lacks {ip}, which weft assigned"));
                }
            }
        }
        let handle = alloc_attrs_of(&ep).handle();
        let held = self.ipam.find(&handle);
        for ip in &ep.ips {
            if !held.contains(&ip.addr()) {
                problems.push(format!(
                    "ipam no longer attributes {} to this container",
                    ip.addr()
                ));
            }
        }
        problems.extend(
            self.datapath
                .check(&link_of(&ep), ep.mac)
                .map_err(datapath_error)?,
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                codes::CHECK_FAILED,
                format!("attachment differs from what weft set up: {}; DEL and ADD the container to repair it", problems.join("; ")),
            ))
        }
    }

    /// CNI STATUS: ready when the datastore answers.
    pub fn cni_status(&self, _req: &StatusRequest) -> Result<(), CniError> {
        self.ipam.pools_usage().map(|_| ()).map_err(|e| {
            CniError::new(
                codes::NOT_AVAILABLE,
                format!("weftd cannot reach its datastore: {e}"),
            )
        })
    }

    pub fn status(&self) -> Result<AgentStatus, CniError> {
        Ok(AgentStatus {
            node: self.facts.node.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            uptime_seconds: self.started.elapsed().as_secs(),
            socket: self.facts.socket.clone(),
            store_backend: self.facts.store_backend.clone(),
            endpoints: self.endpoints.len(),
            pools: self.pool_usage()?,
            underlay: self.facts.underlay.clone(),
            pod_mtu: self.facts.pod_mtu,
            nat_outgoing: self.facts.nat_outgoing,
            spool_replayed: *self
                .spool_replayed
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
            rss_bytes: rss_bytes(),
            fastpath: self
                .fastpath
                .status(self.datapath.fastpath_stats().ok().flatten()),
            kubernetes: self.kubernetes.status(),
        })
    }

    fn pool_usage(&self) -> Result<Vec<PoolUsage>, CniError> {
        Ok(self
            .ipam
            .pools_usage()
            .map_err(ipam_error)?
            .into_iter()
            .map(|p| PoolUsage {
                cidr: p.cidr,
                block_prefix: p.block_prefix,
                blocks: p.blocks,
                capacity: p.capacity,
                allocated: p.allocated,
                quarantined: p.quarantined,
            })
            .collect())
    }

    pub fn ipam_view(&self) -> Result<IpamView, CniError> {
        Ok(IpamView {
            pools: self.pool_usage()?,
            blocks: self
                .ipam
                .blocks()
                .map_err(ipam_error)?
                .into_iter()
                .map(|b| BlockView {
                    cidr: b.cidr,
                    affinity: b.affinity,
                    allocated: b.allocated,
                    quarantined: b.quarantined,
                    capacity: b.capacity,
                })
                .collect(),
            allocations: self
                .ipam
                .allocations()
                .map_err(ipam_error)?
                .into_iter()
                .map(allocation_view)
                .collect(),
        })
    }

    pub fn ipam_check(&self) -> Result<IpamCheckReport, CniError> {
        // deleting endpoints count as live here: their addresses are held
        // until their DEL finishes
        let findings = self.ipam.check(&self.live_handles()).map_err(ipam_error)?;
        let allocs = self.ipam.allocations().map_err(ipam_error)?;
        let mut unallocated = Vec::new();
        for ep in self.endpoints.list() {
            let handle = alloc_attrs_of(&ep).handle();
            let ok = ep.ips.iter().all(|ip| {
                allocs
                    .iter()
                    .any(|a| a.address == ip.addr() && a.handle == handle)
            });
            if !ok {
                unallocated.push(ep.attachment.clone());
            }
        }
        Ok(IpamCheckReport {
            leaked: findings.leaked.into_iter().map(allocation_view).collect(),
            unallocated_endpoints: unallocated,
            problems: findings.problems,
        })
    }
}

fn allocation_view(a: weft_ipam::AllocationInfo) -> AllocationView {
    AllocationView {
        address: a.address,
        block: a.block,
        handle: a.handle,
        pod: weft_api::PodRef {
            namespace: a.pod_namespace,
            name: a.pod_name,
            uid: String::new(),
        },
        container_id: a.container_id,
        ifname: a.ifname,
        allocated_at: a.allocated_at,
        borrowed_by: a.borrowed_by,
    }
}

/// Runs `f` and says how long it took, in microseconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed().as_micros() as u64)
}

/// Joins a scoped worker; a panic there is a bug, surfaced as one.
fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// The result weft reports for an endpoint: the host veth, the pod interface,
/// one address per family with the link-local gateway, default routes.
pub fn result_of(ep: &Endpoint) -> NeutralResult {
    let interfaces = vec![
        Interface {
            name: ep.host_ifname.clone(),
            mac: format_mac(weft_datapath::HOST_VETH_MAC),
            mtu: Some(ep.mtu),
            sandbox: None,
        },
        Interface {
            name: ep.attachment.ifname.clone(),
            mac: format_mac(ep.mac),
            mtu: Some(ep.mtu),
            sandbox: Some(ep.netns.clone()),
        },
    ];
    let mut ips = Vec::new();
    let mut routes = Vec::new();
    for ip in &ep.ips {
        let gw = match ip {
            IpNet::V4(_) => IpAddr::V4(GATEWAY_V4),
            IpNet::V6(_) => IpAddr::V6(GATEWAY_V6),
        };
        ips.push(IpConfig {
            address: *ip,
            gateway: Some(gw),
            interface: Some(1),
        });
        let default: IpNet = match ip {
            IpNet::V4(_) => "0.0.0.0/0".parse().expect("literal"),
            IpNet::V6(_) => "::/0".parse().expect("literal"),
        };
        routes.push(Route {
            dst: default,
            gw: Some(gw),
        });
    }
    NeutralResult {
        interfaces,
        ips,
        routes,
    }
}

pub(crate) fn link_of(ep: &Endpoint) -> PodLink {
    PodLink {
        netns: ep.netns.clone().into(),
        ifname: ep.attachment.ifname.clone(),
        host_ifname: ep.host_ifname.clone(),
        mtu: ep.mtu,
        ipv4: ep.ips.iter().find_map(|n| match n {
            IpNet::V4(v4) => Some(v4.addr()),
            IpNet::V6(_) => None,
        }),
        ipv6: ep.ips.iter().find_map(|n| match n {
            IpNet::V6(v6) => Some(v6.addr()),
            IpNet::V4(_) => None,
        }),
    }
}

fn alloc_attrs(req: &AddRequest) -> AllocationAttrs {
    AllocationAttrs {
        container_id: req.attachment.container_id.clone(),
        ifname: req.attachment.ifname.clone(),
        pod_namespace: req.pod.namespace.clone(),
        pod_name: req.pod.name.clone(),
    }
}

pub(crate) fn alloc_attrs_of(ep: &Endpoint) -> AllocationAttrs {
    AllocationAttrs {
        container_id: ep.attachment.container_id.clone(),
        ifname: ep.attachment.ifname.clone(),
        pod_namespace: ep.pod.namespace.clone(),
        pod_name: ep.pod.name.clone(),
    }
}

/// At most one static address per family: a pod gets one of each. The shim
/// checks this too (code 4 for CNI_ARGS); the agent API re-checks it.
fn check_requested_ips(ips: &[IpAddr]) -> Result<(), CniError> {
    for (i, a) in ips.iter().enumerate() {
        if let Some(b) = ips[..i].iter().find(|b| b.is_ipv4() == a.is_ipv4()) {
            let family = if a.is_ipv4() { "IPv4" } else { "IPv6" };
            return Err(CniError::new(
                codes::INVALID_NETWORK_CONFIG,
                format!("static addresses {b} and {a} are both {family}; a pod gets at most one address per family: ask for one IPv4 and/or one IPv6 address"),
            ));
        }
    }
    Ok(())
}

/// The agent API is an entry point of its own: it re-checks what the shim checked.
pub(crate) fn validate_attachment(a: &Attachment) -> Result<(), CniError> {
    let cid_ok = a
        .container_id
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && a.container_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if !cid_ok {
        return Err(CniError::new(
            codes::INVALID_ENV,
            format!("invalid CNI_CONTAINERID {:?}: use letters, digits, '_', '.', '-', starting with a letter or digit", a.container_id),
        ));
    }
    if let Err(e) = weft_cni_spec::ifname::validate_ifname(&a.ifname) {
        return Err(CniError::new(
            codes::INVALID_ENV,
            format!("invalid CNI_IFNAME {:?}: {e}", a.ifname),
        ));
    }
    Ok(())
}

pub(crate) fn ipam_error(e: IpamError) -> CniError {
    match &e {
        IpamError::Store(StoreError::Unavailable { .. }) => CniError::new(
            codes::TRY_AGAIN_LATER,
            format!("{e}; retry when the datastore is back"),
        ),
        IpamError::Contended { .. } => {
            CniError::new(codes::TRY_AGAIN_LATER, format!("{e}; retry shortly"))
        }
        IpamError::Exhausted { .. } => CniError::new(codes::IPAM_EXHAUSTED, e.to_string()),
        IpamError::RequestRefused { .. } => {
            CniError::new(codes::IPAM_REQUEST_REFUSED, e.to_string())
        }
        _ => CniError::new(codes::INTERNAL, e.to_string()),
    }
}

fn endpoint_error(e: EndpointError) -> CniError {
    match &e {
        EndpointError::Store(StoreError::Unavailable { .. }) => {
            CniError::new(codes::TRY_AGAIN_LATER, e.to_string())
        }
        _ => CniError::new(codes::INTERNAL, e.to_string()),
    }
}

fn datapath_error(e: DatapathError) -> CniError {
    match &e {
        DatapathError::NetnsGone { .. } => CniError::new(codes::INVALID_ENV, e.to_string()),
        DatapathError::NotNetns { .. } | DatapathError::NodeNetns { .. } => CniError::new(
            codes::INVALID_ENV,
            format!("{e}; CNI_NETNS must be the container's own network namespace (/proc/<pid>/ns/net or /run/netns/<name>): check the container runtime"),
        ),
        _ => CniError::new(codes::DATAPATH_FAILURE, e.to_string()),
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// weftd's resident set size, from /proc/self/status.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}
