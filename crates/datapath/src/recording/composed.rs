//! [`RecordingDatapath`]: the four fakes over one recorder, the double for
//! the whole [`crate::Datapath`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{Call, FakeFastPath, FakeLinks, FakeNode, FakePeers, ModelRoute, Op, Recorder};
use crate::{
    Attached, DatapathError, FastEndpoint, FastPathControl, FastPathReport, FastPathSetup,
    FastPathStats, HostLink, Links, NodeNet, NodeSetup, OverlaySetup, PeerNode, Peers, PodLink,
    RoutingMode, SyncReport,
};

/// Records the calls of every concern in one order; see the module docs.
/// Cheap to clone (shared state), so a test keeps one handle and gives
/// another to the code under test.
#[derive(Clone)]
pub struct RecordingDatapath {
    rec: Recorder,
    links: FakeLinks,
    node: FakeNode,
    peers: FakePeers,
    fast: FakeFastPath,
}

impl Default for RecordingDatapath {
    fn default() -> Self {
        let rec = Recorder::new();
        let links = FakeLinks::with_recorder(rec.clone());
        RecordingDatapath {
            node: FakeNode::with_recorder(rec.clone()),
            peers: FakePeers::with_recorder(rec.clone()),
            fast: FakeFastPath::new(links.clone()),
            links,
            rec,
        }
    }
}

impl std::fmt::Debug for RecordingDatapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingDatapath")
            .field("calls", &self.rec.calls().len())
            .field("links", &self.links.attached().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RecordingDatapath {
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared record of every concern's calls.
    pub fn recorder(&self) -> &Recorder {
        &self.rec
    }

    /// The fake of each concern (sharing this double's state).
    pub fn links(&self) -> &FakeLinks {
        &self.links
    }

    pub fn node(&self) -> &FakeNode {
        &self.node
    }

    pub fn peers(&self) -> &FakePeers {
        &self.peers
    }

    pub fn fast(&self) -> &FakeFastPath {
        &self.fast
    }

    /// All calls so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.rec.calls()
    }

    /// All calls so far, clearing the record.
    pub fn take_calls(&self) -> Vec<Call> {
        self.rec.take_calls()
    }

    /// The calls of one operation.
    pub fn calls_of(&self, op: Op) -> Vec<Call> {
        self.rec.calls_of(op)
    }

    /// The next call of `op` fails with `err` (queued: several calls queue
    /// several failures).
    pub fn fail_next(&self, op: Op, err: DatapathError) {
        self.rec.fail_next(op, err)
    }

    /// Every call of `op` fails with the error `make` builds from the call.
    pub fn fail_always(
        &self,
        op: Op,
        make: impl Fn(&Call) -> DatapathError + Send + Sync + 'static,
    ) {
        self.rec.fail_always(op, make)
    }

    /// Stops failing calls of `op` (both kinds).
    pub fn clear_failures(&self, op: Op) {
        self.rec.clear_failures(op)
    }

    /// What `check` answers for attached links (missing links are reported
    /// regardless).
    pub fn set_check_problems(&self, problems: Vec<String>) {
        self.links.set_check_problems(problems)
    }

    /// What `restore_host_side` answers.
    pub fn set_restore_changes(&self, changed: bool) {
        self.links.set_restore_changes(changed)
    }

    /// What `underlay_mtu(None)` answers (default `("eth0", 1500)`).
    pub fn set_underlay(&self, name: &str, mtu: u32) {
        self.node.set_underlay(name, mtu)
    }

    /// The overlay devices `ensure_overlay` made: device → (setup, VTEP MAC).
    pub fn overlays(&self) -> BTreeMap<String, (OverlaySetup, [u8; 6])> {
        self.peers.overlays()
    }

    /// The peer routes the last successful `sync_peers` left, by block.
    pub fn peer_routes(&self) -> BTreeMap<ipnet::IpNet, ModelRoute> {
        self.peers.peer_routes()
    }

    /// The links attached and not detached, by host ifname.
    pub fn attached(&self) -> BTreeMap<String, (PodLink, Attached)> {
        self.links.attached()
    }

    /// Removes a link from the model without a call (simulates the kernel
    /// losing it, e.g. the pod netns being deleted).
    pub fn forget(&self, host_ifname: &str) {
        self.links.forget(host_ifname)
    }
}

impl Links for RecordingDatapath {
    fn attach(&self, link: &PodLink) -> Result<Attached, DatapathError> {
        self.links.attach(link)
    }

    fn create_link(&self, link: &PodLink) -> Result<Attached, DatapathError> {
        self.links.create_link(link)
    }

    fn configure_link(&self, link: &PodLink) -> Result<Attached, DatapathError> {
        self.links.configure_link(link)
    }

    fn check_pod_netns(&self, netns: &std::path::Path) -> Result<(), DatapathError> {
        self.links.check_pod_netns(netns)
    }

    fn detach(&self, host_ifname: &str) -> Result<(), DatapathError> {
        self.links.detach(host_ifname)
    }

    fn check(&self, link: &PodLink, pod_mac: [u8; 6]) -> Result<Vec<String>, DatapathError> {
        self.links.check(link, pod_mac)
    }

    fn restore_host_side(&self, link: &PodLink, pod_mac: [u8; 6]) -> Result<bool, DatapathError> {
        self.links.restore_host_side(link, pod_mac)
    }

    fn list_host_links(&self, prefix: &str) -> Result<Vec<HostLink>, DatapathError> {
        self.links.list_host_links(prefix)
    }
}

impl NodeNet for RecordingDatapath {
    fn prepare_node(&self, setup: &NodeSetup) -> Result<(), DatapathError> {
        self.node.prepare_node(setup)
    }

    fn underlay_mtu(&self, iface: Option<&str>) -> Result<(String, u32), DatapathError> {
        self.node.underlay_mtu(iface)
    }
}

impl Peers for RecordingDatapath {
    fn ensure_overlay(&self, setup: &OverlaySetup) -> Result<[u8; 6], DatapathError> {
        self.peers.ensure_overlay(setup)
    }

    fn sync_peers(
        &self,
        mode: RoutingMode,
        overlay_device: &str,
        peers: &[PeerNode],
    ) -> Result<SyncReport, DatapathError> {
        self.peers.sync_peers(mode, overlay_device, peers)
    }
}

impl FastPathControl for RecordingDatapath {
    fn fastpath_start(&self, setup: &FastPathSetup) -> Result<(), DatapathError> {
        self.fast.fastpath_start(setup)
    }

    fn fastpath_stop(
        &self,
        prefix: &str,
        remote_device: Option<&str>,
    ) -> Result<usize, DatapathError> {
        self.fast.fastpath_stop(prefix, remote_device)
    }

    fn fastpath_sync(&self, endpoints: &[FastEndpoint]) -> Result<FastPathReport, DatapathError> {
        self.fast.fastpath_sync(endpoints)
    }

    fn fastpath_forget(&self, ips: &[IpAddr]) -> Result<(), DatapathError> {
        self.fast.fastpath_forget(ips)
    }

    fn fastpath_stats(&self) -> Result<Option<FastPathStats>, DatapathError> {
        self.fast.fastpath_stats()
    }
}
