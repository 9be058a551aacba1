//! A test double for [`Datapath`]: records every call with its typed
//! arguments, keeps a model of the attached pods, and fails on demand.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{Attached, Datapath, DatapathError, HostLink, NodeSetup, PodLink};

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Attach(PodLink),
    CreateLink(PodLink),
    ConfigureLink(PodLink),
    Detach(String),
    Check { link: PodLink, pod_mac: [u8; 6] },
    RestoreHostSide { link: PodLink, pod_mac: [u8; 6] },
    ListHostLinks(String),
    PrepareNode(NodeSetup),
    UnderlayMtu(Option<String>),
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
    fn underlay_default_and_set() {
        let dp = RecordingDatapath::new();
        assert_eq!(dp.underlay_mtu(None).unwrap(), ("eth0".into(), 1500));
        dp.set_underlay("ens3", 9000);
        assert_eq!(dp.underlay_mtu(None).unwrap(), ("ens3".into(), 9000));
        assert_eq!(dp.underlay_mtu(Some("x")).unwrap().0, "x");
    }
}
