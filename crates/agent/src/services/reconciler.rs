//! The Service reconciler: the Kubernetes view's Services and
//! EndpointSlices in, the kernel's load-balancing maps brought to match.
//!
//! Pure over a [`KernelMaps`] seam (the data path's service maps in weftd, a
//! fake in tests). The rules:
//! - At start the kernel's maps are read back: their IDs are kept
//!   ([`IdAllocator::restore`]), so conntrack, reverse NAT and affinity
//!   entries written before a restart keep meaning the same Service and
//!   backend, and the first round is a full diff against what the kernel
//!   holds (stale entries of Services deleted while weftd was away go).
//! - Nothing is written before both watches have listed once: an empty
//!   view at start is "not known yet", not "no Services".
//! - Afterwards each round hands only the Services whose input changed to
//!   [`LbState::update`] and writes its ordered ops: a full round
//!   ([`Reconciler::sync`], every Service's input) finds them by comparing,
//!   a changed round ([`Reconciler::sync_changed`], the view's feed of
//!   changed Services) is told them, so its cost follows the change, not
//!   the number of Services. A failed write makes
//!   the reconciler "dirty" and the next rounds run full
//!   [`weft_lb::reconcile`] rounds (which hold back unsafe ops) until one
//!   is clean.
//! - A UDP backend the kernel's maps stopped selecting is remembered
//!   ([`Reconciler::take_left_udp`]) so weftd aborts the sockets still
//!   connected to it (see [`super::stale`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use weft_lb::{
    reconcile, Config, EndpointSlice, IdAllocator, LbMaps, LbState, MapWriter, Op, Service,
    ServiceName,
};

use super::stale;

/// The kernel's maps as the reconciler uses them.
pub trait KernelMaps: MapWriter<Error = String> {
    /// Everything the maps hold now.
    fn read_back(&mut self) -> Result<LbMaps, String>;
    /// Makes the addresses NodePorts answer on exactly `addrs`.
    fn set_node_addrs(&mut self, _addrs: &[std::net::IpAddr]) -> Result<(), String> {
        Ok(())
    }
    /// ClientIP affinity entries, for `weft services`.
    fn affinity(&mut self) -> Vec<weft_api::AffinityView> {
        Vec::new()
    }
    /// The programs' Service counters by name, for `weft services`.
    fn counters(&mut self) -> BTreeMap<String, u64> {
        BTreeMap::new()
    }
    /// Aborts the UDP sockets of a network namespace (`None`: weftd's own)
    /// connected to one of `peers`; returns how many.
    fn abort_udp(&mut self, _netns: Option<&Path>, _peers: &[SocketAddr]) -> Result<usize, String> {
        Ok(0)
    }
}

/// Each Service's input: the Service (if seen) and its slices.
pub type Inputs = BTreeMap<ServiceName, (Option<Service>, Vec<EndpointSlice>)>;

/// What the reconciler has done so far (for `weft services`, logs, tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub rounds: u64,
    pub ops_applied: u64,
    pub ops_failed: u64,
    /// The last round left ops unwritten; the next one retries.
    pub pending: bool,
    pub last_error: Option<String>,
    /// Services whose input the desired state could not take (IDs
    /// exhausted, a Service too large), retried every round.
    pub refused: BTreeMap<ServiceName, String>,
}

pub struct Reconciler {
    state: LbState,
    /// What the kernel holds, as far as writes that succeeded tell.
    current: LbMaps,
    /// The input each Service's entries were last computed from.
    inputs: Inputs,
    synced: bool,
    dirty: bool,
    progress: Progress,
    /// UDP backends the kernel's maps stopped selecting, not yet taken.
    left_udp: BTreeSet<SocketAddr>,
    /// The newest input of each refused Service: a changed round retries
    /// them (no feed tells of them again).
    retry: Inputs,
}

impl Reconciler {
    /// A reconciler that takes over `kernel`'s maps as they are.
    pub fn restore(config: Config, kernel: LbMaps) -> Self {
        Reconciler {
            state: LbState::new(config, IdAllocator::restore(&kernel)),
            current: kernel,
            inputs: Inputs::new(),
            synced: false,
            dirty: true,
            progress: Progress::default(),
            left_udp: BTreeSet::new(),
            retry: Inputs::new(),
        }
    }

    pub fn maps(&self) -> &LbMaps {
        self.state.maps()
    }

    pub fn current(&self) -> &LbMaps {
        &self.current
    }

    pub fn ids(&self) -> &IdAllocator {
        self.state.ids()
    }

    pub fn inputs(&self) -> &Inputs {
        &self.inputs
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The UDP backends (address, port) the kernel's maps stopped selecting
    /// since the last call: sockets still connected to them are stale.
    pub fn take_left_udp(&mut self) -> BTreeSet<SocketAddr> {
        std::mem::take(&mut self.left_udp)
    }

    /// The first round has run (the maps follow the API from here on).
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The kernel's maps equal the desired state.
    pub fn converged(&self) -> bool {
        self.synced && !self.dirty && self.current == *self.state.maps()
    }

    /// One full round: `inputs` is every Service with its slices as the view
    /// shows them now. Returns the number of ops written.
    pub fn sync<W: KernelMaps>(&mut self, inputs: Inputs, kernel: &mut W) -> usize {
        self.progress.rounds += 1;
        let mut written = 0;
        self.retry.clear();
        if !self.synced {
            let services: Vec<Service> = inputs.values().filter_map(|i| i.0.clone()).collect();
            let slices: Vec<EndpointSlice> =
                inputs.values().flat_map(|i| i.1.iter().cloned()).collect();
            match self.state.reset(&services, &slices) {
                Ok(_) => {
                    self.synced = true;
                    self.inputs = inputs;
                    self.progress.refused.clear();
                }
                Err(e) => {
                    // nothing written: the kernel keeps what it had
                    self.progress.last_error = Some(format!("building the Service maps: {e}"));
                    return 0;
                }
            }
        } else {
            written += self.update_changed(inputs, kernel);
        }
        if self.dirty {
            written += self.full_round(kernel);
        }
        self.progress.pending = self.dirty;
        written
    }

    /// One changed round: `changed` holds only the Services whose input
    /// changed since the last round, each with its whole input now (`None`
    /// and no slices: gone); Services refused before are retried. Before
    /// the first full round nothing can be done: returns 0.
    pub fn sync_changed<W: KernelMaps>(&mut self, mut changed: Inputs, kernel: &mut W) -> usize {
        if !self.synced {
            return 0;
        }
        self.progress.rounds += 1;
        for (name, input) in std::mem::take(&mut self.retry) {
            changed.entry(name).or_insert(input);
        }
        // a change the load balancer does not see (or undone since) costs
        // nothing more
        let names: Vec<ServiceName> = changed
            .iter()
            .filter(|(n, i)| match self.inputs.get(n) {
                Some(held) => held != *i,
                None => i.0.is_some() || !i.1.is_empty(),
            })
            .map(|(n, _)| n.clone())
            .collect();
        let mut written = self.update(names, changed, kernel);
        if self.dirty {
            written += self.full_round(kernel);
        }
        self.progress.pending = self.dirty;
        written
    }

    fn update_changed<W: KernelMaps>(&mut self, inputs: Inputs, kernel: &mut W) -> usize {
        let mut names: Vec<ServiceName> = inputs
            .iter()
            .filter(|(n, i)| self.inputs.get(n) != Some(i))
            .map(|(n, _)| n.clone())
            .collect();
        names.extend(
            self.inputs
                .keys()
                .filter(|n| !inputs.contains_key(n))
                .cloned(),
        );
        self.update(names, inputs, kernel)
    }

    /// Hands each of `names` with its input (none: gone) to the state and
    /// writes the ops, all Services' in one go (in order: each Service's
    /// ops stay in their safe order, and a writer batches runs of one map).
    fn update<W: KernelMaps>(
        &mut self,
        names: Vec<ServiceName>,
        mut inputs: Inputs,
        kernel: &mut W,
    ) -> usize {
        let mut all = Vec::new();
        for name in names {
            let (svc, slices) = inputs.remove(&name).unwrap_or_default();
            match self.state.update(&name, svc.clone(), slices.clone()) {
                Ok(ops) => {
                    self.progress.refused.remove(&name);
                    if svc.is_none() && slices.is_empty() {
                        self.inputs.remove(&name);
                    } else {
                        self.inputs.insert(name, (svc, slices));
                    }
                    all.extend(ops);
                }
                Err(e) => {
                    // the old input stays recorded: a full round finds this
                    // name differing again, a changed round retries it
                    self.progress.refused.insert(name.clone(), e.to_string());
                    self.retry.insert(name, (svc, slices));
                }
            }
        }
        if self.dirty {
            // a full round follows and writes what is missing
            return 0;
        }
        self.write_ops(&all, kernel)
    }

    /// Writes `ops` in order until one fails; the rest is left to a full
    /// round (which knows which ops are safe after a failure).
    fn write_ops<W: KernelMaps>(&mut self, ops: &[Op], kernel: &mut W) -> usize {
        if ops.is_empty() {
            return 0;
        }
        // the UDP frontends these ops touch, with what they selected before
        // (each Service's ops touch only its own frontends and orphans, so
        // before the round is before each frontend's first op)
        let mut touched = BTreeSet::new();
        let mut candidates = BTreeSet::new();
        for op in ops {
            if let Op::UpsertService(k, _) | Op::DeleteService(k) = op {
                let master = k.with_slot(0);
                if k.proto == weft_lb::Protocol::UDP && touched.insert(master) {
                    if let Some(m) = self.current.services.get(&master) {
                        candidates.extend(stale::frontend_backends(
                            &self.current,
                            &master,
                            m.count,
                        ));
                    }
                }
            }
        }
        let (n, error) = kernel.write_all(ops);
        for op in &ops[..n] {
            self.current.apply(op);
        }
        if let Some(e) = error {
            self.progress.ops_failed += 1;
            self.progress.last_error = Some(e);
            self.dirty = true;
        }
        self.progress.ops_applied += n as u64;
        if !candidates.is_empty() {
            let still = stale::udp_selectable(&self.current);
            self.left_udp.extend(candidates.difference(&still));
        }
        n
    }

    fn full_round<W: KernelMaps>(&mut self, kernel: &mut W) -> usize {
        let before = stale::udp_selectable(&self.current);
        let round = reconcile(self.state.maps(), &mut self.current, kernel);
        if round.applied > 0 {
            let after = stale::udp_selectable(&self.current);
            self.left_udp.extend(before.difference(&after));
        }
        self.progress.ops_applied += round.applied as u64;
        self.progress.ops_failed += round.failed.len() as u64;
        if let Some((op, e)) = round.failed.first() {
            self.progress.last_error = Some(format!("{op:?}: {e}"));
        }
        self.dirty = !round.is_clean();
        round.applied
    }
}

// weftd holds its kernel boxed (the data path's maps, or none in tests)
impl MapWriter for Box<dyn KernelMaps + Send> {
    type Error = String;
    fn write(&mut self, op: &Op) -> Result<(), String> {
        (**self).write(op)
    }
    fn write_all(&mut self, ops: &[Op]) -> (usize, Option<String>) {
        (**self).write_all(ops)
    }
}

impl KernelMaps for Box<dyn KernelMaps + Send> {
    fn read_back(&mut self) -> Result<LbMaps, String> {
        (**self).read_back()
    }
    fn set_node_addrs(&mut self, addrs: &[std::net::IpAddr]) -> Result<(), String> {
        (**self).set_node_addrs(addrs)
    }
    fn affinity(&mut self) -> Vec<weft_api::AffinityView> {
        (**self).affinity()
    }
    fn counters(&mut self) -> BTreeMap<String, u64> {
        (**self).counters()
    }
    fn abort_udp(&mut self, netns: Option<&Path>, peers: &[SocketAddr]) -> Result<usize, String> {
        (**self).abort_udp(netns, peers)
    }
}

/// The kernel's maps in memory, with writes that fail on demand: the test
/// double of the data path's service maps.
#[derive(Debug, Default)]
pub struct FakeKernel {
    pub maps: LbMaps,
    /// Writes still to succeed before every further one fails (None: all
    /// succeed).
    pub fail_after: Option<usize>,
    pub writes: usize,
    /// Calls of `write_all` (what the kernel's writer turns into one batch
    /// per run of one map's upserts or deletes).
    pub write_alls: usize,
    /// Each `abort_udp` call: the namespace and the peers.
    pub aborted: Vec<(Option<PathBuf>, Vec<SocketAddr>)>,
}

impl MapWriter for FakeKernel {
    type Error = String;
    fn write(&mut self, op: &Op) -> Result<(), String> {
        if let Some(n) = self.fail_after.as_mut() {
            if *n == 0 {
                return Err("injected map write failure".into());
            }
            *n -= 1;
        }
        self.writes += 1;
        self.maps.apply(op);
        Ok(())
    }
    fn write_all(&mut self, ops: &[Op]) -> (usize, Option<String>) {
        self.write_alls += 1;
        for (i, op) in ops.iter().enumerate() {
            if let Err(e) = self.write(op) {
                return (i, Some(e));
            }
        }
        (ops.len(), None)
    }
}

impl KernelMaps for FakeKernel {
    fn read_back(&mut self) -> Result<LbMaps, String> {
        Ok(self.maps.clone())
    }
    fn abort_udp(&mut self, netns: Option<&Path>, peers: &[SocketAddr]) -> Result<usize, String> {
        self.aborted
            .push((netns.map(Path::to_path_buf), peers.to_vec()));
        Ok(0)
    }
}
