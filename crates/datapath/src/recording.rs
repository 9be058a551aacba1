//! Test doubles for the seams ([`crate::seams`]): one fake per concern
//! ([`FakeLinks`], [`FakeNode`], [`FakePeers`], [`FakeFastPath`]), each
//! recording its calls with their typed arguments into a [`Recorder`],
//! keeping a model of what the kernel would hold, and failing on demand; and
//! [`RecordingDatapath`], all four over one shared recorder, the double for
//! the whole [`crate::Datapath`].

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{
    DatapathError, FastEndpoint, FastPathSetup, NodeSetup, OverlaySetup, PeerNode, PodLink,
    RoutingMode,
};

mod composed;
mod fast;
mod links;
mod node;
mod peers;

pub use composed::RecordingDatapath;
pub use fast::FakeFastPath;
pub use links::FakeLinks;
pub use node::FakeNode;
pub use peers::{FakePeers, ModelRoute};

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

/// The operations of the seams, to configure failures.
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

type ErrFn = Arc<dyn Fn(&Call) -> DatapathError + Send + Sync>;

#[derive(Default)]
struct Log {
    calls: Vec<Call>,
    /// one-shot failures, consumed in order
    fail_next: HashMap<Op, VecDeque<DatapathError>>,
    /// failures for every call of an op (after the one-shot ones)
    fail_always: HashMap<Op, ErrFn>,
}

/// The calls of one or more fakes, in order, and the failures they are to
/// return. Cheap to clone (shared state): fakes built over clones of one
/// recorder share one record.
#[derive(Clone, Default)]
pub struct Recorder {
    log: Arc<Mutex<Log>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("calls", &self.lock().calls.len())
            .finish()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Records the call and returns the configured failure, if any.
    pub fn enter(&self, call: Call) -> Result<(), DatapathError> {
        let mut s = self.lock();
        let op = call.op();
        let err = s
            .fail_next
            .get_mut(&op)
            .and_then(|q| q.pop_front())
            .or_else(|| s.fail_always.get(&op).map(|f| f(&call)));
        s.calls.push(call);
        err.map_or(Ok(()), Err)
    }
}

/// A deterministic, locally administered MAC for the n-th object a fake
/// made; `kind` tells the fakes apart (links 0x58, overlay devices 0x59).
fn mac_for(kind: u8, n: u32) -> [u8; 6] {
    let b = n.to_be_bytes();
    [0x0a, kind, b[0], b[1], b[2], b[3]]
}

/// Locks a model, surviving a test thread that panicked while holding it.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
