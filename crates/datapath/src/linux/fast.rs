//! The fast path's half of [`LinuxDatapath`]: loading the programs in the
//! node netns, keeping their endpoint map and hooks in step, the counters.

use std::collections::HashMap;
use std::net::IpAddr;

use super::LinuxDatapath;
use crate::error::DatapathError;
use crate::fastpath::{self, FastPath};
use crate::netlink::{self as nl, Request};
use crate::{
    validate_ifname, FastEndpoint, FastPathControl, FastPathReport, FastPathSetup, FastPathStats,
    Links,
};

impl LinuxDatapath {
    fn fast(&self) -> std::sync::MutexGuard<'_, Option<Box<FastPath>>> {
        self.fast.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ifindex_of(&self, name: &str) -> Result<u32, DatapathError> {
        validate_ifname(name)?;
        self.with_node(|node| Self::get_link(node, name, format!("link {name}")))?
            .map(|l| l.index)
            .ok_or_else(|| DatapathError::LinkNotFound { name: name.into() })
    }

    /// The node's veths (name → ifindex) and the ifindexes carrying a qdisc
    /// other than `noqueue` (shaping, or anything else the fast path would
    /// skip past).
    fn veths_and_qdiscs(
        &self,
    ) -> Result<(HashMap<String, u32>, std::collections::HashSet<u32>), DatapathError> {
        self.with_node(|node| {
            let links = node.dump(&Request::new(nl::dump_links(), "links"))?;
            let qdiscs = node.dump(&Request::new(nl::dump_qdiscs(), "qdiscs"))?;
            let veths = links
                .iter()
                .filter_map(nl::parse_link)
                .filter(|l| l.kind.as_deref() == Some("veth"))
                .map(|l| (l.name, l.index))
                .collect();
            let shaped = qdiscs
                .iter()
                .filter_map(nl::parse_qdisc)
                .filter(|q| q.kind != "noqueue")
                .map(|q| q.ifindex)
                .collect();
            Ok((veths, shaped))
        })
    }

    /// The fast path's flow reader ([`crate::flows`]): `None` while the fast
    /// path is off or none of its programs reports flows. Not on the
    /// `Datapath` trait: only weftd's flow reader asks, once it starts.
    pub fn flow_source(&self) -> Result<Option<crate::flows::KernelFlowSource>, DatapathError> {
        match self.fast().as_ref() {
            Some(fp) => fp.flow_source(),
            None => Ok(None),
        }
    }

    /// Runs `f` with the fast path's map object (`None` while it is off),
    /// holding it loaded meanwhile: weftd loads the Service programs inside,
    /// sharing its flow ring (see [`FastPath::shared_maps`]).
    pub fn with_fast_maps<R>(&self, f: impl FnOnce(Option<&crate::bpf::Loaded>) -> R) -> R {
        let guard = self.fast();
        f(guard.as_deref().map(FastPath::shared_maps))
    }

    pub(super) fn fast_start(&self, setup: &FastPathSetup) -> Result<(), DatapathError> {
        let remote = match &setup.remote_device {
            Some(name) => self.ifindex_of(name)?,
            None => 0,
        };
        let pin_dir = match &self.pin_dir {
            Some(d) => match crate::bpf::pin::prepare_dir(d) {
                Ok(()) => Some(d.as_path()),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "cannot pin the fast path's maps; they start empty at every agent start"
                    );
                    None
                }
            },
            None => None,
        };
        let mut fp = self.in_node_ns(|| {
            FastPath::load_with_policy(&setup.pools, remote, pin_dir, self.policy)
        })??;
        if !self.flow_events {
            fp.set_flow_events(false)?;
        }
        tracing::info!(
            remote_device = ?setup.remote_device,
            policy = ?self.policy,
            flow_events = self.flow_events,
            pinned = ?fp.pinned(),
            "ebpf fast path loaded"
        );
        *self.fast() = Some(Box::new(fp));
        Ok(())
    }

    pub(super) fn fast_stop(
        &self,
        prefix: &str,
        remote_device: Option<&str>,
    ) -> Result<usize, DatapathError> {
        *self.fast() = None;
        let mut ifindexes: Vec<u32> = self
            .list_host_links(prefix)?
            .into_iter()
            .map(|l| l.ifindex)
            .collect();
        if let Some(dev) = remote_device {
            match self.ifindex_of(dev) {
                Ok(i) => ifindexes.push(i),
                Err(DatapathError::LinkNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.in_node_ns(|| fastpath::detach_all(&ifindexes))?
    }

    pub(super) fn fast_sync(
        &self,
        endpoints: &[FastEndpoint],
    ) -> Result<FastPathReport, DatapathError> {
        let mut guard = self.fast();
        let Some(fp) = guard.as_mut() else {
            return Ok(FastPathReport::default());
        };
        let (veths, shaped) = self.veths_and_qdiscs()?;
        let desired = fastpath::plan(endpoints, &veths, &shaped);
        // the veths of the planned entries are the ones the program belongs on
        let targets: std::collections::HashSet<u32> =
            desired.values().map(|v| v.host_ifindex).collect();
        let mut report = FastPathReport {
            addresses: desired.len(),
            fast: desired
                .values()
                .filter(|v| v.flags & fastpath::maps::EP_FAST != 0)
                .count(),
            shaped: endpoints
                .iter()
                .filter(|e| {
                    veths
                        .get(&e.host_ifname)
                        .is_some_and(|i| shaped.contains(i))
                })
                .map(|e| e.host_ifname.clone())
                .collect(),
            ..Default::default()
        };
        let (changes, attached) = self.in_node_ns(|| fp.sync(desired, &targets))??;
        report.changes = changes;
        report.attached = attached;
        Ok(report)
    }

    pub(super) fn fast_forget(&self, ips: &[IpAddr]) -> Result<(), DatapathError> {
        match self.fast().as_mut() {
            Some(fp) => fp.forget(ips),
            None => Ok(()),
        }
    }

    /// The policy maps' seam for `node`, owning `rules`: over the pinned
    /// maps when there is a pin directory (valid across program reloads),
    /// else over the loaded programs' maps (`None` before `fastpath_start`).
    pub fn policy_maps(
        &self,
        node: &str,
        rules: weft_policy::RuleIds,
    ) -> Result<Option<crate::policy::KernelPolicyMaps>, DatapathError> {
        if let Some(dir) = &self.pin_dir {
            if crate::bpf::pin::prepare_dir(dir).is_ok() {
                return crate::policy::KernelPolicyMaps::open_pinned(node, rules, dir).map(Some);
            }
        }
        self.fast()
            .as_ref()
            .map(|fp| fp.policy_maps(node, rules))
            .transpose()
    }

    pub(super) fn fast_stats(&self) -> Result<Option<FastPathStats>, DatapathError> {
        self.fast().as_ref().map(|fp| fp.stats()).transpose()
    }
}

impl FastPathControl for LinuxDatapath {
    fn fastpath_start(&self, setup: &FastPathSetup) -> Result<(), DatapathError> {
        self.fast_start(setup)
    }

    fn fastpath_stop(
        &self,
        prefix: &str,
        remote_device: Option<&str>,
    ) -> Result<usize, DatapathError> {
        self.fast_stop(prefix, remote_device)
    }

    fn fastpath_sync(&self, endpoints: &[FastEndpoint]) -> Result<FastPathReport, DatapathError> {
        self.fast_sync(endpoints)
    }

    fn fastpath_forget(&self, ips: &[IpAddr]) -> Result<(), DatapathError> {
        self.fast_forget(ips)
    }

    fn fastpath_stats(&self) -> Result<Option<FastPathStats>, DatapathError> {
        self.fast_stats()
    }
}
