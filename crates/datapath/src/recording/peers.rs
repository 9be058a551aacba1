//! The fake of [`Peers`]: a model of the overlay devices and of one route
//! per peer block.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{lock, mac_for, Call, Recorder};
use crate::{DatapathError, OverlaySetup, PeerNode, Peers, RoutingMode, SyncReport};

/// A peer route in the model of [`FakePeers`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRoute {
    pub peer: String,
    pub mode: RoutingMode,
}

#[derive(Default)]
struct Model {
    /// overlay device → (setup, VTEP MAC)
    overlays: BTreeMap<String, (OverlaySetup, [u8; 6])>,
    /// how many devices were made (for their MACs)
    made: u32,
    /// block (truncated) → route, as the last successful sync left them
    peer_routes: BTreeMap<ipnet::IpNet, ModelRoute>,
}

/// Records calls into its [`Recorder`] and models overlay devices and peer
/// routes. Cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct FakePeers {
    rec: Recorder,
    model: Arc<Mutex<Model>>,
}

impl std::fmt::Debug for FakePeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = lock(&self.model);
        f.debug_struct("FakePeers")
            .field("overlays", &m.overlays.keys().collect::<Vec<_>>())
            .field("peer_routes", &m.peer_routes.len())
            .finish()
    }
}

impl FakePeers {
    /// A fake with a recorder of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fake recording into `rec` (shared with other fakes).
    pub fn with_recorder(rec: Recorder) -> Self {
        FakePeers {
            rec,
            model: Default::default(),
        }
    }

    pub fn recorder(&self) -> &Recorder {
        &self.rec
    }

    /// The overlay devices `ensure_overlay` made: device → (setup, VTEP MAC).
    pub fn overlays(&self) -> BTreeMap<String, (OverlaySetup, [u8; 6])> {
        lock(&self.model).overlays.clone()
    }

    /// The peer routes the last successful `sync_peers` left, by block.
    pub fn peer_routes(&self) -> BTreeMap<ipnet::IpNet, ModelRoute> {
        lock(&self.model).peer_routes.clone()
    }
}

impl Peers for FakePeers {
    /// Models the device: the same setup keeps its MAC, another one gets a
    /// new MAC (the kernel implementation recreates the device).
    fn ensure_overlay(&self, setup: &OverlaySetup) -> Result<[u8; 6], DatapathError> {
        self.rec.enter(Call::EnsureOverlay(setup.clone()))?;
        crate::validate_ifname(&setup.device)?;
        let mut m = lock(&self.model);
        if let Some((have, mac)) = m.overlays.get(&setup.device) {
            if have == setup {
                return Ok(*mac);
            }
        }
        m.made += 1;
        let mac = mac_for(0x59, m.made);
        m.overlays
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
        self.rec.enter(Call::SyncPeers {
            mode,
            overlay_device: overlay_device.to_string(),
            peers: peers.to_vec(),
        })?;
        let mut m = lock(&self.model);
        if mode == RoutingMode::Overlay && !m.overlays.contains_key(overlay_device) {
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
            .filter(|(b, r)| m.peer_routes.get(*b) != Some(*r))
            .count();
        let removed = m
            .peer_routes
            .iter()
            .filter(|(b, r)| want.get(*b) != Some(*r))
            .count();
        m.peer_routes = want;
        Ok(SyncReport { added, removed })
    }
}
