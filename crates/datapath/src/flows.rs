//! Flow events from the programs to weftd (`bpf/lib/flow.h`): the
//! [`FlowSource`] seam the agent's reader drains, the kernel one over the
//! `weft_flows` ring buffer with the `weft_drops` and `weft_flow_lost`
//! counters, and [`FakeFlowSource`] for tests.
//!
//! Memory is bounded on both sides: the ring's size is fixed in the C
//! (256 KiB), and a drain hands out at most `max` events per call, so the
//! reader decides how much it holds at once.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use weft_bpf::{from_bytes, tcx_attach, Loaded, Map, PerCpuArray, RingBuf, TcxDirection};
use weft_bpf_abi::{Drops, FlowEvent, DROP_MAX};

use crate::error::DatapathError;

/// A test-only program (`bpf/flow_selftest.bpf.c`) that reports every TCP
/// or UDP packet through `flow_report()`; weftd never attaches it.
pub static FLOW_SELFTEST_OBJECT: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/flow_selftest.o"));
/// Its function name.
pub const FLOW_SELFTEST: &str = "weft_flow_selftest";

/// The ring buffer map the programs report into.
pub const FLOW_RING: &str = "weft_flows";
/// Drops by reason (per CPU).
pub const FLOW_DROPS: &str = "weft_drops";
/// Events the ring had no room for (per CPU, index 0).
pub const FLOW_LOST: &str = "weft_flow_lost";

/// `CLOCK_MONOTONIC` in ns: the clock of `bpf_ktime_get_ns()`, which
/// stamps flow events (std's `Instant` reads it too, but hides the value).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What the kernel counted beside the events themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowCounters {
    /// Every dropped packet by reason (not rate-limited, unlike the events).
    pub drops: Drops,
    /// Events the programs could not put in the ring (it was full).
    pub lost: u64,
}

/// Where flow events come from.
pub trait FlowSource: Send {
    /// Appends up to `max` events to `out`, oldest first; returns how many.
    /// Records that are not a whole event are skipped (counted in `bad`).
    fn drain(&mut self, max: usize, out: &mut Vec<FlowEvent>) -> Result<Drain, DatapathError>;
    /// Waits until an event may be ready or `timeout` passes.
    fn wait(&self, timeout: Duration) -> Result<bool, DatapathError>;
    /// The kernel's counters, summed over CPUs.
    fn counters(&self) -> Result<FlowCounters, DatapathError>;
    /// The ring's size in bytes (0 when there is no kernel ring).
    fn ring_bytes(&self) -> u64 {
        0
    }
}

/// What one [`FlowSource::drain`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drain {
    pub read: usize,
    /// Records of the wrong size (an ABI mismatch: never expected).
    pub bad: usize,
}

/// The kernel's ring and counters, with handles of their own (they outlive
/// the object that loaded them, and keep the maps alive while read).
pub struct KernelFlowSource {
    ring: RingBuf,
    ring_bytes: u64,
    drops: Option<Map>,
    lost: Option<Map>,
}

impl std::fmt::Debug for KernelFlowSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelFlowSource").finish_non_exhaustive()
    }
}

impl KernelFlowSource {
    /// The flow maps of the first of `objects` that has the ring; `None`
    /// when no program of theirs reports flows.
    pub fn find(objects: &[&Loaded]) -> Result<Option<Self>, DatapathError> {
        for l in objects {
            if let Ok(ring) = l.map(FLOW_RING) {
                let other = |name| l.map(name).ok().map(Map::try_clone).transpose();
                return Ok(Some(KernelFlowSource {
                    ring: RingBuf::new(ring)?,
                    ring_bytes: u64::from(ring.def().max_entries),
                    drops: other(FLOW_DROPS)?,
                    lost: other(FLOW_LOST)?,
                }));
            }
        }
        Ok(None)
    }
}

impl FlowSource for KernelFlowSource {
    fn drain(&mut self, max: usize, out: &mut Vec<FlowEvent>) -> Result<Drain, DatapathError> {
        let mut bad = 0;
        let d = self
            .ring
            .drain(max, |rec| match from_bytes::<FlowEvent>(rec) {
                Some(ev) if rec.len() == std::mem::size_of::<FlowEvent>() => out.push(ev),
                _ => bad += 1,
            });
        Ok(Drain {
            read: d.read - bad,
            bad,
        })
    }

    fn wait(&self, timeout: Duration) -> Result<bool, DatapathError> {
        Ok(self.ring.wait(timeout)?)
    }

    fn ring_bytes(&self) -> u64 {
        self.ring_bytes
    }

    fn counters(&self) -> Result<FlowCounters, DatapathError> {
        let mut c = FlowCounters::default();
        if let Some(m) = &self.drops {
            let arr = PerCpuArray::<u64>::new(m)?;
            let mut slots = [0u64; DROP_MAX as usize];
            for (i, s) in slots.iter_mut().enumerate() {
                *s = arr.sum(i as u32)?;
            }
            c.drops = Drops::from_slots(slots);
        }
        if let Some(m) = &self.lost {
            c.lost = PerCpuArray::<u64>::new(m)?.sum(0)?;
        }
        Ok(c)
    }
}

/// Test-only (weftd's hidden `--flow-selftest`): the selftest program,
/// loaded on its own and attached at the ingress of the host veths it is
/// given (behind whatever runs there: it reports and passes every packet
/// on), read like the programs' own ring. It proves the whole way, real
/// packets of real pods to `weft observe`, before any policy or Service
/// program reports.
pub struct SelftestFlows {
    loaded: Loaded,
    source: KernelFlowSource,
    attached: HashSet<u32>,
}

impl SelftestFlows {
    /// Loads the program and its maps (fresh, nothing pinned).
    pub fn load() -> Result<Self, DatapathError> {
        let loaded = weft_bpf::load(FLOW_SELFTEST_OBJECT)?;
        let source = KernelFlowSource::find(&[&loaded])?.ok_or_else(|| {
            DatapathError::Bpf(weft_bpf::BpfError::Unsupported(
                "the flow selftest object has no flow ring".into(),
            ))
        })?;
        Ok(SelftestFlows {
            loaded,
            source,
            attached: HashSet::new(),
        })
    }

    /// Attaches the program to the ingress of those of `ifindexes` that do
    /// not carry it yet; returns how many it attached. Must run in the
    /// netns of the devices.
    pub fn attach(&mut self, ifindexes: &[u32]) -> Result<usize, DatapathError> {
        let prog = self.loaded.program(FLOW_SELFTEST)?;
        let mut n = 0;
        for &i in ifindexes {
            if self.attached.insert(i) {
                tcx_attach(i, TcxDirection::Ingress, prog)?;
                n += 1;
            }
        }
        // forget devices that are gone (ifindexes are not re-used soon,
        // but a long test run should not grow this)
        self.attached.retain(|i| ifindexes.contains(i));
        Ok(n)
    }
}

impl FlowSource for SelftestFlows {
    fn drain(&mut self, max: usize, out: &mut Vec<FlowEvent>) -> Result<Drain, DatapathError> {
        self.source.drain(max, out)
    }

    fn wait(&self, timeout: Duration) -> Result<bool, DatapathError> {
        self.source.wait(timeout)
    }

    fn counters(&self) -> Result<FlowCounters, DatapathError> {
        self.source.counters()
    }

    fn ring_bytes(&self) -> u64 {
        self.source.ring_bytes()
    }
}

#[derive(Default)]
struct FakeState {
    queue: VecDeque<FlowEvent>,
    counters: FlowCounters,
}

/// A source fed by tests: [`FakeFlowSource::push`] from any thread (the
/// handle is cheap to clone), the reader drains it like the kernel's.
#[derive(Clone, Default)]
pub struct FakeFlowSource {
    inner: Arc<(Mutex<FakeState>, Condvar)>,
}

impl FakeFlowSource {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.inner.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, ev: FlowEvent) {
        self.state().queue.push_back(ev);
        self.inner.1.notify_all();
    }

    pub fn set_counters(&self, c: FlowCounters) {
        self.state().counters = c;
    }

    /// Events not drained yet.
    pub fn pending(&self) -> usize {
        self.state().queue.len()
    }
}

impl FlowSource for FakeFlowSource {
    fn drain(&mut self, max: usize, out: &mut Vec<FlowEvent>) -> Result<Drain, DatapathError> {
        let mut st = self.state();
        let n = max.min(st.queue.len());
        out.extend(st.queue.drain(..n));
        Ok(Drain { read: n, bad: 0 })
    }

    fn wait(&self, timeout: Duration) -> Result<bool, DatapathError> {
        let st = self.state();
        let (st, _) = self
            .inner
            .1
            .wait_timeout_while(st, timeout, |s| s.queue.is_empty())
            .unwrap_or_else(|p| p.into_inner());
        Ok(!st.queue.is_empty())
    }

    fn counters(&self) -> Result<FlowCounters, DatapathError> {
        Ok(self.state().counters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_drains_in_order_and_at_most_max() {
        let mut f = FakeFlowSource::new();
        for i in 0..5 {
            f.push(FlowEvent {
                ts_ns: i,
                ..Default::default()
            });
        }
        let mut out = Vec::new();
        assert_eq!(f.drain(3, &mut out).unwrap().read, 3);
        assert_eq!(out.iter().map(|e| e.ts_ns).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(f.wait(Duration::ZERO).unwrap());
        assert_eq!(f.drain(10, &mut out).unwrap().read, 2);
        assert!(!f.wait(Duration::from_millis(10)).unwrap());
    }
}
