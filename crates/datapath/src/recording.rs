//! A test double for [`Datapath`]: records every call with its typed
//! arguments, keeps a model of the attached pods, and fails on demand.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{
    Attached, Datapath, DatapathError, FastEndpoint, FastPathReport, FastPathSetup, FastPathStats,
    HostLink, NodeSetup, OverlaySetup, PeerNode, PodLink, RoutingMode, SyncReport,
};

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Attach(PodLink),
    CreateLink(PodLink),
    ConfigureLink(PodLink),
    Detach(String),
    Check {
        link: PodLink,
        pod_mac: [u8; 6],
    },
    RestoreHostSide {
        link: PodLink,
        pod_mac: [u8; 6],
    },
    ListHostLinks(String),
    PrepareNode(NodeSetup),
    UnderlayMtu(Option<String>),
    EnsureOverlay(OverlaySetup),
    SyncPeers {
        mode: RoutingMode,
        overlay_device: String,
        peers: Vec<PeerNode>,
    },
    FastPathStart(FastPathSetup),
    FastPathStop {
        prefix: String,
        remote_device: Option<String>,
    },
    FastPathSync(Vec<FastEndpoint>),
    FastPathForget(Vec<IpAddr>),
}

impl Call {
    pub fn op(&self) -> Op {
        match self {
            Call::Attach(_) => Op::Attach,
            Call::CreateLink(_) => Op::CreateLink,
            Call::ConfigureLink(_) => Op::ConfigureLink,
            Call::Detach(_) => Op::Detach,
            Call::Check { .. } => Op::Check,
            Call::RestoreHostSide { .. } => Op::RestoreHostSide,
            Call::ListHostLinks(_) => Op::ListHostLinks,
            Call::PrepareNode(_) => Op::PrepareNode,
            Call::UnderlayMtu(_) => Op::UnderlayMtu,
            Call::EnsureOverlay(_) => Op::EnsureOverlay,
            Call::SyncPeers { .. } => Op::SyncPeers,
            Call::FastPathStart(_) => Op::FastPathStart,
            Call::FastPathStop { .. } => Op::FastPathStop,
            Call::FastPathSync(_) => Op::FastPathSync,
            Call::FastPathForget(_) => Op::FastPathForget,
        }
    }
}

/// The operations of [`Datapath`], to configure failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Attach,
    CreateLink,
    ConfigureLink,
    Detach,
    Check,
    RestoreHostSide,
    ListHostLinks,
    PrepareNode,
    UnderlayMtu,
    EnsureOverlay,
    SyncPeers,
    FastPathStart,
    FastPathStop,
    FastPathSync,
    FastPathForget,
}

/// A peer route in the model of [`RecordingDatapath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRoute {
    pub peer: String,
    pub mode: RoutingMode,
}

type ErrFn = Arc<dyn Fn(&Call) -> DatapathError + Send + Sync>;

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    /// one-shot failures, consumed in order
    fail_next: HashMap<Op, VecDeque<DatapathError>>,
    /// failures for every call of an op (after the one-shot ones)
    fail_always: HashMap<Op, ErrFn>,
    /// host_ifname → (link, attached)
    links: BTreeMap<String, (PodLink, Attached)>,
    next_ifindex: u32,
    check_problems: Vec<String>,
    restore_changes: bool,
    underlay: Option<(String, u32)>,
    /// overlay device → (setup, VTEP MAC)
    overlays: BTreeMap<String, (OverlaySetup, [u8; 6])>,
    /// block (truncated) → route, as the last successful sync left them
    peer_routes: BTreeMap<ipnet::IpNet, ModelRoute>,
    /// the fast path is started (records no programs: there is no kernel)
    fast_started: bool,
}

/// Records calls; see the module docs. Cheap to clone (shared state), so a
/// test keeps one handle and gives another to the code under test.
#[derive(Clone, Default)]
pub struct RecordingDatapath {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for RecordingDatapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("RecordingDatapath")
            .field("calls", &s.calls.len())
            .field("links", &s.links.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl RecordingDatapath {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// All calls so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// All calls so far, clearing the record.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The calls of one operation.
    pub fn calls_of(&self, op: Op) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.op() == op)
            .cloned()
            .collect()
    }

    /// The next call of `op` fails with `err` (queued: several calls queue
    /// several failures).
    pub fn fail_next(&self, op: Op, err: DatapathError) {
        self.lock().fail_next.entry(op).or_default().push_back(err);
    }

    /// Every call of `op` fails with the error `make` builds from the call.
    pub fn fail_always(
        &self,
        op: Op,
        make: impl Fn(&Call) -> DatapathError + Send + Sync + 'static,
    ) {
        self.lock().fail_always.insert(op, Arc::new(make));
    }

    /// Stops failing calls of `op` (both kinds).
    pub fn clear_failures(&self, op: Op) {
        let mut s = self.lock();
        s.fail_next.remove(&op);
        s.fail_always.remove(&op);
    }

    /// What `check` answers for attached links (missing links are reported
    /// regardless).
    pub fn set_check_problems(&self, problems: Vec<String>) {
        self.lock().check_problems = problems;
    }

    /// What `restore_host_side` answers.
    pub fn set_restore_changes(&self, changed: bool) {
        self.lock().restore_changes = changed;
    }

    /// What `underlay_mtu(None)` answers (default `("eth0", 1500)`).
    pub fn set_underlay(&self, name: &str, mtu: u32) {
        self.lock().underlay = Some((name.to_string(), mtu));
    }

    /// The overlay devices `ensure_overlay` made: device → (setup, VTEP MAC).
    pub fn overlays(&self) -> BTreeMap<String, (OverlaySetup, [u8; 6])> {
        self.lock().overlays.clone()
    }

    /// The peer routes the last successful `sync_peers` left, by block.
    pub fn peer_routes(&self) -> BTreeMap<ipnet::IpNet, ModelRoute> {
        self.lock().peer_routes.clone()
    }

    /// The links attached and not detached, by host ifname.
    pub fn attached(&self) -> BTreeMap<String, (PodLink, Attached)> {
        self.lock().links.clone()
    }

    /// Removes a link from the model without a call (simulates the kernel
    /// losing it, e.g. the pod netns being deleted).
    pub fn forget(&self, host_ifname: &str) {
        self.lock().links.remove(host_ifname);
    }

    /// Records the call and returns the configured failure, if any.
    fn enter(&self, call: Call) -> (MutexGuard<'_, State>, Result<(), DatapathError>) {
        let mut s = self.lock();
        let op = call.op();
        let err = s
            .fail_next
            .get_mut(&op)
            .and_then(|q| q.pop_front())
            .or_else(|| s.fail_always.get(&op).map(|f| f(&call)));
        s.calls.push(call);
        (s, err.map_or(Ok(()), Err))
    }
}

impl RecordingDatapath {
    /// Adds a link to the model, as a successful create or attach does.
    fn model_create(mut s: MutexGuard<'_, State>, link: &PodLink) -> Attached {
        s.next_ifindex += 1;
        let n = s.next_ifindex;
        let a = Attached {
            pod_mac: mac_for(n),
            host_ifindex: 100 + n,
        };
        s.links.insert(link.host_ifname.clone(), (link.clone(), a));
        a
    }
}

/// A deterministic, locally administered MAC for the n-th attachment.
fn mac_for(n: u32) -> [u8; 6] {
    let b = n.to_be_bytes();
    [0x0a, 0x58, b[0], b[1], b[2], b[3]]
}

impl Datapath for RecordingDatapath {
    fn attach(&self, link: &PodLink) -> Result<Attached, DatapathError> {
        let (s, r) = self.enter(Call::Attach(link.clone()));
        r?;
        Ok(Self::model_create(s, link))
    }

    fn create_link(&self, link: &PodLink) -> Result<Attached, DatapathError> {
        let (s, r) = self.enter(Call::CreateLink(link.clone()));
        r?;
        Ok(Self::model_create(s, link))
    }

    fn configure_link(&self, link: &PodLink) -> Result<Attached, DatapathError> {
        let (mut s, r) = self.enter(Call::ConfigureLink(link.clone()));
        if let Err(e) = r {
            // like the kernel implementation: a failed configure removes the pair
            s.links.remove(&link.host_ifname);
            return Err(e);
        }
        let Some(entry) = s.links.get_mut(&link.host_ifname) else {
            return Err(DatapathError::LinkNotFound {
                name: link.host_ifname.clone(),
            });
        };
        entry.0 = link.clone();
        Ok(entry.1)
    }

    fn detach(&self, host_ifname: &str) -> Result<(), DatapathError> {
        let (mut s, r) = self.enter(Call::Detach(host_ifname.to_string()));
        r?;
        s.links.remove(host_ifname);
        Ok(())
    }

    fn check(&self, link: &PodLink, pod_mac: [u8; 6]) -> Result<Vec<String>, DatapathError> {
        let (s, r) = self.enter(Call::Check {
            link: link.clone(),
            pod_mac,
        });
        r?;
        if !s.links.contains_key(&link.host_ifname) {
            return Ok(vec![format!("host interface {} missing", link.host_ifname)]);
        }
        Ok(s.check_problems.clone())
    }

    fn restore_host_side(&self, link: &PodLink, pod_mac: [u8; 6]) -> Result<bool, DatapathError> {
        let (s, r) = self.enter(Call::RestoreHostSide {
            link: link.clone(),
            pod_mac,
        });
        r?;
        if !s.links.contains_key(&link.host_ifname) {
            return Err(DatapathError::LinkNotFound {
                name: link.host_ifname.clone(),
            });
        }
        Ok(s.restore_changes)
    }

    fn list_host_links(&self, prefix: &str) -> Result<Vec<HostLink>, DatapathError> {
        let (s, r) = self.enter(Call::ListHostLinks(prefix.to_string()));
        r?;
        Ok(s.links
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, (_, a))| HostLink {
                name: name.clone(),
                ifindex: a.host_ifindex,
                peer_netnsid: Some(0),
            })
            .collect())
    }

    fn prepare_node(&self, setup: &NodeSetup) -> Result<(), DatapathError> {
        let (_s, r) = self.enter(Call::PrepareNode(setup.clone()));
        r
    }

    fn underlay_mtu(&self, iface: Option<&str>) -> Result<(String, u32), DatapathError> {
        let (s, r) = self.enter(Call::UnderlayMtu(iface.map(str::to_string)));
        r?;
        let (name, mtu) = s.underlay.clone().unwrap_or_else(|| ("eth0".into(), 1500));
        Ok((iface.map(str::to_string).unwrap_or(name), mtu))
    }

    /// Models the device: the same setup keeps its MAC, another one gets a
    /// new MAC (the kernel implementation recreates the device).
    fn ensure_overlay(&self, setup: &OverlaySetup) -> Result<[u8; 6], DatapathError> {
        let (mut s, r) = self.enter(Call::EnsureOverlay(setup.clone()));
        r?;
        crate::validate_ifname(&setup.device)?;
        if let Some((have, mac)) = s.overlays.get(&setup.device) {
            if have == setup {
                return Ok(*mac);
            }
        }
        s.next_ifindex += 1;
        let n = s.next_ifindex;
        let mut mac = mac_for(n);
        mac[1] = 0x59;
        s.overlays
            .insert(setup.device.clone(), (setup.clone(), mac));
        Ok(mac)
    }

    /// Models one route per block: overlay mode needs the device and a VTEP
    /// MAC per peer, native mode an underlay address of each block's family;
    /// two peers with one block fail. The counts are of routes only.
    fn sync_peers(
        &self,
        mode: RoutingMode,
        overlay_device: &str,
        peers: &[PeerNode],
    ) -> Result<SyncReport, DatapathError> {
        let (mut s, r) = self.enter(Call::SyncPeers {
            mode,
            overlay_device: overlay_device.to_string(),
            peers: peers.to_vec(),
        });
        r?;
        if mode == RoutingMode::Overlay && !s.overlays.contains_key(overlay_device) {
            return Err(DatapathError::LinkNotFound {
                name: overlay_device.to_string(),
            });
        }
        let invalid = |p: &PeerNode, reason: String| DatapathError::InvalidPeer {
            peer: p.name.clone(),
            reason,
        };
        let mut want = BTreeMap::new();
        for p in peers {
            if mode == RoutingMode::Overlay && p.vtep_mac.is_none() {
                return Err(invalid(p, "no VTEP MAC for overlay routing".into()));
            }
            for b in &p.blocks {
                let b = b.trunc();
                let family_ok = match b {
                    ipnet::IpNet::V4(_) => p.underlay_v4.is_some(),
                    // overlay: v6 blocks use a link-local next hop
                    ipnet::IpNet::V6(_) => mode == RoutingMode::Overlay || p.underlay_v6.is_some(),
                };
                if !family_ok {
                    return Err(invalid(p, format!("no underlay address for block {b}")));
                }
                let route = ModelRoute {
                    peer: p.name.clone(),
                    mode,
                };
                if let Some(other) = want.insert(b, route) {
                    if other.peer != p.name {
                        return Err(invalid(
                            p,
                            format!("block {b} is also announced by {}", other.peer),
                        ));
                    }
                }
            }
        }
        let added = want
            .iter()
            .filter(|(b, r)| s.peer_routes.get(*b) != Some(*r))
            .count();
        let removed = s
            .peer_routes
            .iter()
            .filter(|(b, r)| want.get(*b) != Some(*r))
            .count();
        s.peer_routes = want;
        Ok(SyncReport { added, removed })
    }

    fn fastpath_start(&self, setup: &FastPathSetup) -> Result<(), DatapathError> {
        let (mut s, r) = self.enter(Call::FastPathStart(setup.clone()));
        r?;
        s.fast_started = true;
        Ok(())
    }

    fn fastpath_stop(
        &self,
        prefix: &str,
        remote_device: Option<&str>,
    ) -> Result<usize, DatapathError> {
        let (mut s, r) = self.enter(Call::FastPathStop {
            prefix: prefix.to_string(),
            remote_device: remote_device.map(str::to_string),
        });
        r?;
        s.fast_started = false;
        Ok(0)
    }

    /// Reports every address of an endpoint whose host link exists as in the
    /// map, fast when settled (the model has no qdiscs).
    fn fastpath_sync(&self, endpoints: &[FastEndpoint]) -> Result<FastPathReport, DatapathError> {
        let (s, r) = self.enter(Call::FastPathSync(endpoints.to_vec()));
        r?;
        if !s.fast_started {
            return Ok(FastPathReport::default());
        }
        let present: Vec<&FastEndpoint> = endpoints
            .iter()
            .filter(|e| s.links.contains_key(&e.host_ifname))
            .collect();
        Ok(FastPathReport {
            addresses: present.iter().map(|e| e.ips.len()).sum(),
            fast: present
                .iter()
                .filter(|e| e.settled)
                .map(|e| e.ips.len())
                .sum(),
            ..Default::default()
        })
    }

    fn fastpath_forget(&self, ips: &[IpAddr]) -> Result<(), DatapathError> {
        self.enter(Call::FastPathForget(ips.to_vec())).1
    }

    fn fastpath_stats(&self) -> Result<Option<FastPathStats>, DatapathError> {
        Ok(self.lock().fast_started.then(FastPathStats::default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(host: &str) -> PodLink {
        PodLink {
            netns: "/run/netns/p".into(),
            ifname: "eth0".into(),
            host_ifname: host.into(),
            mtu: 1450,
            ipv4: Some("10.244.0.5".parse().unwrap()),
            ipv6: None,
        }
    }

    #[test]
    fn records_and_models_links() {
        let dp = RecordingDatapath::new();
        let a = dp.attach(&link("weftaaa")).unwrap();
        dp.attach(&link("weftbbb")).unwrap();
        assert_ne!(a.pod_mac, [0; 6]);
        assert_eq!(dp.list_host_links("weft").unwrap().len(), 2);
        dp.detach("weftaaa").unwrap();
        dp.detach("weftaaa").unwrap();
        let names: Vec<_> = dp
            .list_host_links("weft")
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
        assert_eq!(names, ["weftbbb"]);
        assert_eq!(dp.calls_of(Op::Detach).len(), 2);
        assert_eq!(dp.calls()[0], Call::Attach(link("weftaaa")));
        assert!(dp.check(&link("weftaaa"), a.pod_mac).unwrap()[0].contains("missing"));
        assert!(dp.check(&link("weftbbb"), a.pod_mac).unwrap().is_empty());
    }

    #[test]
    fn failures_one_shot_and_always() {
        let dp = RecordingDatapath::new();
        dp.fail_next(
            Op::Attach,
            DatapathError::NetnsGone {
                path: "/run/netns/p".into(),
            },
        );
        assert!(matches!(
            dp.attach(&link("weftx")),
            Err(DatapathError::NetnsGone { .. })
        ));
        assert!(dp.attach(&link("weftx")).is_ok());
        dp.fail_always(Op::Detach, |c| {
            DatapathError::Injected(format!("no: {c:?}"))
        });
        assert!(dp.detach("weftx").is_err());
        assert!(dp.detach("weftx").is_err());
        dp.clear_failures(Op::Detach);
        assert!(dp.detach("weftx").is_ok());
        assert_eq!(dp.calls().len(), 5);
    }

    #[test]
    fn overlay_and_peer_sync_are_modelled() {
        let dp = RecordingDatapath::new();
        let peer = PeerNode {
            name: "node2".into(),
            underlay_v4: Some("198.18.0.2".parse().unwrap()),
            underlay_v6: None,
            vtep_mac: Some([2, 0, 0, 0, 0, 2]),
            blocks: vec![
                "10.244.0.64/26".parse().unwrap(),
                "fd00:10:244::40/122".parse().unwrap(),
            ],
        };
        let e = dp
            .sync_peers(
                RoutingMode::Overlay,
                "weft.vxlan",
                std::slice::from_ref(&peer),
            )
            .unwrap_err();
        assert!(matches!(e, DatapathError::LinkNotFound { .. }), "{e}");
        let setup = OverlaySetup {
            device: "weft.vxlan".into(),
            vni: 4096,
            port: 4789,
            local_v4: Some("198.18.0.1".parse().unwrap()),
            local_v6: None,
            underlay_dev: None,
            mtu: 1450,
        };
        let mac = dp.ensure_overlay(&setup).unwrap();
        assert_eq!(dp.ensure_overlay(&setup).unwrap(), mac);
        let r = dp
            .sync_peers(
                RoutingMode::Overlay,
                "weft.vxlan",
                std::slice::from_ref(&peer),
            )
            .unwrap();
        assert_eq!(
            r,
            SyncReport {
                added: 2,
                removed: 0
            }
        );
        let again = dp
            .sync_peers(
                RoutingMode::Overlay,
                "weft.vxlan",
                std::slice::from_ref(&peer),
            )
            .unwrap();
        assert_eq!(again, SyncReport::default());
        // native needs an IPv6 underlay address for the IPv6 block
        assert!(matches!(
            dp.sync_peers(
                RoutingMode::Native,
                "weft.vxlan",
                std::slice::from_ref(&peer)
            ),
            Err(DatapathError::InvalidPeer { .. })
        ));
        assert_eq!(dp.peer_routes().len(), 2, "a failed sync changes nothing");
        let r = dp
            .sync_peers(RoutingMode::Overlay, "weft.vxlan", &[])
            .unwrap();
        assert_eq!(
            r,
            SyncReport {
                added: 0,
                removed: 2
            }
        );
        assert!(dp.peer_routes().is_empty());
        assert_eq!(dp.calls_of(Op::SyncPeers).len(), 5);
        assert_eq!(
            dp.calls_of(Op::EnsureOverlay),
            [
                Call::EnsureOverlay(setup.clone()),
                Call::EnsureOverlay(setup)
            ]
        );
    }

    #[test]
    fn underlay_default_and_set() {
        let dp = RecordingDatapath::new();
        assert_eq!(dp.underlay_mtu(None).unwrap(), ("eth0".into(), 1500));
        dp.set_underlay("ens3", 9000);
        assert_eq!(dp.underlay_mtu(None).unwrap(), ("ens3".into(), 9000));
        assert_eq!(dp.underlay_mtu(Some("x")).unwrap().0, "x");
    }
}
