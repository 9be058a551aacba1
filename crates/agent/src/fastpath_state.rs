//! What the agent knows of the eBPF fast path (`weft status`): whether it
//! runs, why not, and the last sync's report. Held by the agent; driven by
//! `fastpath.rs`.

use std::sync::Mutex;

use weft_api::FastPathStatus;
use weft_datapath::FastPathReport;

/// What `weft status` reports, kept by the agent.
#[derive(Debug, Default)]
pub struct FastPathState {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub(crate) active: bool,
    pub(crate) reason: Option<String>,
    pub(crate) last: FastPathReport,
}

impl FastPathState {
    pub fn is_active(&self) -> bool {
        self.lock().active
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set(&self, active: bool, reason: Option<String>) {
        let mut g = self.lock();
        g.active = active;
        g.reason = reason;
    }

    /// The status view; counters come from the data path.
    pub fn status(&self, counters: Option<weft_datapath::FastPathStats>) -> FastPathStatus {
        let g = self.lock();
        let mut out = FastPathStatus {
            mode: if g.active { "ebpf" } else { "kernel" }.to_string(),
            reason: g.reason.clone(),
            addresses: g.last.addresses,
            fast: g.last.fast,
            shaped: g.last.shaped.clone(),
            counters: Default::default(),
        };
        if let Some(c) = counters {
            // names and order come from the C header (weft/counters.h)
            out.counters = c.pairs().iter().map(|(k, v)| (k.to_string(), *v)).collect();
        }
        out
    }
}
