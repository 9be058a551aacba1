//! weftd's hidden `--flow-selftest` (tests only): flows from the test-only
//! selftest program ([`weft_datapath::flows::SelftestFlows`]), kept attached
//! to every pod's host veth, so a lab test sees real pod traffic end to end
//! in `weft observe` before any policy or Service program reports.

use std::sync::Weak;
use std::time::{Duration, Instant};

use weft_bpf_abi::FlowEvent;
use weft_datapath::flows::{Drain, FlowCounters, FlowSource, SelftestFlows};
use weft_datapath::DatapathError;

use crate::agent::Agent;

/// How often new pod veths are looked for.
const EVERY: Duration = Duration::from_millis(250);

pub struct Selftest {
    flows: SelftestFlows,
    agent: Weak<Agent>,
    last: Option<Instant>,
}

impl Selftest {
    pub fn load(agent: Weak<Agent>) -> Result<Self, DatapathError> {
        Ok(Selftest {
            flows: SelftestFlows::load()?,
            agent,
            last: None,
        })
    }

    fn attach_new(&mut self) {
        if self.last.is_some_and(|t| t.elapsed() < EVERY) {
            return;
        }
        self.last = Some(Instant::now());
        let Some(agent) = self.agent.upgrade() else {
            return;
        };
        let links = match agent.datapath().list_host_links(crate::naming::HOST_PREFIX) {
            Ok(l) => l,
            Err(e) => return tracing::debug!(error = %e, "flow selftest: listing veths"),
        };
        let ifindexes: Vec<u32> = links.iter().map(|l| l.ifindex).collect();
        match self.flows.attach(&ifindexes) {
            Ok(0) => {}
            Ok(n) => tracing::info!(veths = n, "flow selftest program attached"),
            Err(e) => tracing::warn!(error = %e, "flow selftest: attaching"),
        }
    }
}

impl FlowSource for Selftest {
    fn drain(&mut self, max: usize, out: &mut Vec<FlowEvent>) -> Result<Drain, DatapathError> {
        self.attach_new();
        self.flows.drain(max, out)
    }

    fn wait(&self, timeout: Duration) -> Result<bool, DatapathError> {
        // short, so new veths are found while nothing is reported
        self.flows.wait(timeout.min(EVERY))
    }

    fn counters(&self) -> Result<FlowCounters, DatapathError> {
        self.flows.counters()
    }

    fn ring_bytes(&self) -> u64 {
        self.flows.ring_bytes()
    }
}
