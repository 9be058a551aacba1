//! Flow observation: a reader thread drains the programs' flow events
//! ([`weft_datapath::flows::FlowSource`]), resolves both ends to pods
//! ([`enrich`]), and keeps the last N in a bounded ring ([`Hub`]) that the
//! streaming API ([`stream`]) serves from and follows.
//!
//! Memory: the ring holds at most `capacity` [`Stored`] flows of 136 bytes
//! each (the 104-byte kernel event, the wall-clock time and three shared
//! pointers; a test holds the size); pod names and labels are shared between
//! all the flows of a pod, so 4096 flows (the default) cost 544 KiB plus one
//! copy of each pod's metadata, and an observer copies at most the ring once. An observer that falls behind by more than the ring is told how
//! many flows it missed instead of holding them.

pub mod decode;
pub mod enrich;
pub mod remote;
pub mod selftest;
pub mod services;
pub mod stream;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use weft_bpf_abi::FlowEvent;
use weft_datapath::flows::{FlowCounters, FlowSource};

pub use enrich::{PeerMeta, Resolve, RuleBook, RuleHit};

/// Flows kept per node unless `--flow-buffer` says otherwise.
pub const DEFAULT_CAPACITY: usize = 4096;
/// Events taken from the kernel ring per drain: the reader's batch.
const DRAIN_MAX: usize = 256;
/// How long the reader waits for a source to appear before it looks again.
const WAIT: Duration = Duration::from_millis(200);
/// How often the reader looks at the ring: the programs write without
/// waking it (`bpf/lib/flow.h`) until the ring is a quarter full, so a flow
/// reaches the buffer within this (a reported packet does not pay for a
/// thread's wake-up; the reader wakes at most 20 times a second).
pub const POLL: Duration = Duration::from_millis(50);
/// How often the reader refreshes the kernel's counters, and retries a
/// source that is not there (the fast path off, or no program reports).
const TICK: Duration = Duration::from_secs(1);

/// One flow as the ring keeps it.
#[derive(Debug, Clone)]
pub struct Stored {
    pub ev: FlowEvent,
    /// Nanoseconds since the Unix epoch.
    pub wall_ns: u64,
    pub src: Option<Arc<PeerMeta>>,
    pub dst: Option<Arc<PeerMeta>>,
    /// The policy rule that decided, or the Service a translation was for
    /// (one pointer for both: a flow has one or the other, and the ring's
    /// flows stay 136 bytes).
    pub policy: Option<Arc<Decider>>,
}

/// What decided a flow, as the API names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decider {
    Policy(weft_api::PolicyRef),
    Service(weft_api::ServiceRef),
}

/// What the reader has seen, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Flows read, by verdict code (index = `WEFT_VERDICT_*`, 0 = unknown).
    pub by_verdict: [u64; 5],
    /// The kernel's drop and lost counters (last read).
    pub kernel: FlowCounters,
    /// Records that were not a flow event (never expected).
    pub bad: u64,
    /// A kernel source is being read.
    pub reading: bool,
    /// Its ring's size in bytes.
    pub ring_bytes: u64,
}

struct Ring {
    /// The sequence number the next flow gets; the front's is `next - len`.
    next: u64,
    flows: VecDeque<Stored>,
}

/// The bounded ring of recent flows, shared by the reader and observers.
pub struct Hub {
    node: String,
    capacity: usize,
    ring: Mutex<Ring>,
    grew: Condvar,
    stats: Mutex<HubStats>,
}

/// What [`Hub::after`] found.
pub struct Batch {
    pub flows: Vec<Stored>,
    /// Flows that left the ring before this observer saw them.
    pub missed: u64,
    /// Where the next call starts.
    pub cursor: u64,
}

impl Hub {
    pub fn new(node: &str, capacity: usize) -> Arc<Hub> {
        Arc::new(Hub {
            node: node.to_string(),
            capacity: capacity.max(1),
            ring: Mutex::new(Ring {
                next: 0,
                flows: VecDeque::new(),
            }),
            grew: Condvar::new(),
            stats: Mutex::new(HubStats::default()),
        })
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stats_mut(&self) -> MutexGuard<'_, HubStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.ring().flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> HubStats {
        *self.stats_mut()
    }

    /// Adds flows, dropping the oldest beyond the capacity, and wakes
    /// observers.
    pub fn push(&self, flows: impl IntoIterator<Item = Stored>) {
        let mut n = 0;
        let mut by_verdict = [0u64; 5];
        {
            let mut ring = self.ring();
            for f in flows {
                by_verdict[usize::from(f.ev.verdict).min(4)] += 1;
                if ring.flows.len() == self.capacity {
                    ring.flows.pop_front();
                }
                ring.flows.push_back(f);
                ring.next += 1;
                n += 1;
            }
        }
        if n > 0 {
            let mut st = self.stats_mut();
            for (a, b) in st.by_verdict.iter_mut().zip(by_verdict) {
                *a += b;
            }
            drop(st);
            self.grew.notify_all();
        }
    }

    /// Every stored flow and the cursor after the last.
    pub fn snapshot(&self) -> (Vec<Stored>, u64) {
        let ring = self.ring();
        (ring.flows.iter().cloned().collect(), ring.next)
    }

    /// Flows from `cursor` on, waiting up to `wait` for one to come.
    pub fn after(&self, cursor: u64, wait: Duration) -> Batch {
        let ring = self.ring();
        let (ring, _) = self
            .grew
            .wait_timeout_while(ring, wait, |r| r.next <= cursor)
            .unwrap_or_else(|p| p.into_inner());
        let front = ring.next - ring.flows.len() as u64;
        let from = cursor.max(front);
        Batch {
            flows: ring
                .flows
                .iter()
                .skip((from - front) as usize)
                .cloned()
                .collect(),
            missed: from - cursor.min(from),
            cursor: ring.next,
        }
    }

    fn set_kernel(&self, c: FlowCounters, bad: u64, ring_bytes: Option<u64>) {
        let mut st = self.stats_mut();
        st.kernel = c;
        st.bad += bad;
        st.reading = ring_bytes.is_some();
        st.ring_bytes = ring_bytes.unwrap_or(0);
    }
}

/// A source, when there is one: the kernel's appears once the fast path
/// is loaded with a program that reports flows.
pub type SourceProvider = Box<dyn FnMut() -> Option<Box<dyn FlowSource>> + Send>;

/// Reads `source` into `hub` until the process ends (a thread of its own).
pub fn start_reader(
    hub: Arc<Hub>,
    provider: SourceProvider,
    resolve: Box<dyn Resolve>,
    rules: Arc<OnceLock<Arc<dyn RuleBook>>>,
) {
    let never = Arc::new(AtomicBool::new(false));
    let _ = spawn_reader(hub, provider, resolve, rules, never);
}

/// weftd's reader as [`start_reader`] runs it, until `stop` is set (within
/// [`WAIT`]): for benchmarks that drive the kernel ring through it.
pub fn spawn_reader(
    hub: Arc<Hub>,
    mut provider: SourceProvider,
    mut resolve: Box<dyn Resolve>,
    rules: Arc<OnceLock<Arc<dyn RuleBook>>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("flows".into())
        .spawn(move || {
            let mut source: Option<Box<dyn FlowSource>> = None;
            let mut last_tick: Option<Instant> = None;
            let mut batch = Vec::with_capacity(DRAIN_MAX);
            let mut bad = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let tick = last_tick.is_none_or(|t| t.elapsed() >= TICK);
                if source.is_none() {
                    if tick {
                        source = provider();
                        last_tick = Some(Instant::now());
                        if source.is_some() {
                            tracing::info!("reading flow events from the programs");
                        }
                    }
                    if source.is_none() {
                        std::thread::sleep(WAIT);
                        continue;
                    }
                }
                let Some(src) = source.as_mut() else { continue };
                if tick {
                    last_tick = Some(Instant::now());
                    match src.counters() {
                        Ok(c) => {
                            hub.set_kernel(c, std::mem::take(&mut bad), Some(src.ring_bytes()))
                        }
                        Err(e) => tracing::debug!(error = %e, "reading the flow counters"),
                    }
                }
                if let Err(e) = src.wait(POLL) {
                    tracing::warn!(error = %e, "waiting on the flow ring; reading stops");
                    hub.set_kernel(FlowCounters::default(), 0, None);
                    source = None;
                    continue;
                }
                batch.clear();
                match src.drain(DRAIN_MAX, &mut batch) {
                    Ok(d) => bad += d.bad as u64,
                    Err(e) => tracing::warn!(error = %e, "draining the flow ring"),
                }
                if batch.is_empty() {
                    continue;
                }
                let rules = rules.get().cloned();
                let clock = decode::Clock::now();
                let stored: Vec<Stored> = batch
                    .iter()
                    .map(|ev| enrich::store(ev, &clock, resolve.as_mut(), rules.as_deref()))
                    .collect();
                hub.push(stored);
            }
        })
        .expect("spawn the flow reader")
}

/// The agent's flows, once [`start`] ran (`--flow-buffer 0` turns them off).
#[derive(Default)]
pub struct Link {
    hub: OnceLock<Arc<Hub>>,
    rules: Arc<OnceLock<Arc<dyn RuleBook>>>,
}

impl Link {
    pub fn hub(&self) -> Option<&Arc<Hub>> {
        self.hub.get()
    }

    /// The policy side names rule ids and counts rule hits through this
    /// (set once, when policy is compiled on this node).
    pub fn set_rule_book(&self, book: Arc<dyn RuleBook>) {
        let _ = self.rules.set(book);
    }

    pub fn rule_book(&self) -> Option<Arc<dyn RuleBook>> {
        self.rules.get().cloned()
    }
}

/// The kernel's source: the fast path's flow ring once a loaded program
/// has one, or (tests, `--flow-selftest`) the selftest program's. A failure
/// is logged once, not at every retry.
pub fn kernel_provider(
    linux: Arc<weft_datapath::LinuxDatapath>,
    agent: std::sync::Weak<crate::agent::Agent>,
    selftest: bool,
) -> SourceProvider {
    let mut warned = false;
    Box::new(move || {
        let found = if selftest {
            selftest::Selftest::load(agent.clone())
                .map(|s| Some(Box::new(s) as Box<dyn FlowSource>))
        } else {
            linux
                .flow_source()
                .map(|s| s.map(|s| Box::new(s) as Box<dyn FlowSource>))
        };
        found.unwrap_or_else(|e| {
            if !std::mem::replace(&mut warned, true) {
                tracing::warn!(error = %e, "cannot read the flow ring; flows are not observed (retrying)");
            }
            None
        })
    })
}

/// Serves flows over TLS when `--flows-listen` asks (see [`remote`]).
pub fn start_remote(
    cfg: &crate::config::AgentConfig,
    agent: &Arc<crate::agent::Agent>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let Some(addr) = cfg.flows_listen else {
        return Ok(());
    };
    let (Some(cert), Some(key)) = (&cfg.flows_tls_cert, &cfg.flows_tls_key) else {
        anyhow::bail!("--flows-listen needs --flows-tls-cert and --flows-tls-key");
    };
    if cfg.flows_tls_optional && !cert.exists() {
        tracing::warn!(
            cert = %cert.display(),
            "flows over TLS are off: no certificate at --flows-tls-cert; create the Secret weft-flows-tls (README, Flows) and restart weftd to serve `weft observe --cluster`"
        );
        return Ok(());
    }
    let Some(hub) = agent.flows().hub().cloned() else {
        anyhow::bail!("--flows-listen needs flow observation on (--flow-buffer above 0)");
    };
    let source = crate::k8s::source(cfg).context(
        "--flows-listen checks readers' tokens with the Kubernetes API: give --kubeconfig or run in a pod",
    )?;
    let gate = weft_k8s::access::Reviewer::new(&source).context("building the token reviewer")?;
    let tls = remote::tls_config(cert, key)?;
    remote::start(addr, tls, Arc::new(gate), hub)?;
    Ok(())
}

/// Starts the reader over `provider` with the agent's pod resolver.
pub fn start(agent: &Arc<crate::agent::Agent>, capacity: usize, provider: SourceProvider) {
    if capacity == 0 {
        tracing::info!("flow observation is off (--flow-buffer 0)");
        return;
    }
    let hub = Hub::new(&agent.facts().node, capacity);
    if agent.flows().hub.set(hub.clone()).is_err() {
        return; // started already
    }
    let resolve = Box::new(enrich::AgentResolver::new(Arc::downgrade(agent)));
    start_reader(hub, provider, resolve, agent.flows().rules.clone());
}

#[cfg(test)]
mod tests;
