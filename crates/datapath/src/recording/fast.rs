//! The fake of [`FastPathControl`]: no programs (there is no kernel), a
//! model of which endpoints the map would hold, read off a [`FakeLinks`].

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::{Call, FakeLinks, Recorder};
use crate::{
    DatapathError, FastEndpoint, FastPathControl, FastPathReport, FastPathSetup, FastPathStats,
};

/// Records calls into its [`Recorder`]. Cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct FakeFastPath {
    rec: Recorder,
    /// whose links the endpoints' veths must be among
    links: FakeLinks,
    started: Arc<AtomicBool>,
}

impl FakeFastPath {
    /// A fake that records into `links`' recorder and sees its links.
    pub fn new(links: FakeLinks) -> Self {
        FakeFastPath {
            rec: links.recorder().clone(),
            links,
            started: Default::default(),
        }
    }

    pub fn recorder(&self) -> &Recorder {
        &self.rec
    }

    /// Whether `fastpath_start` ran and no `fastpath_stop` after it.
    pub fn started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }
}

impl FastPathControl for FakeFastPath {
    fn fastpath_start(&self, setup: &FastPathSetup) -> Result<(), DatapathError> {
        self.rec.enter(Call::FastPathStart(setup.clone()))?;
        self.started.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn fastpath_stop(
        &self,
        prefix: &str,
        remote_device: Option<&str>,
    ) -> Result<usize, DatapathError> {
        self.rec.enter(Call::FastPathStop {
            prefix: prefix.to_string(),
            remote_device: remote_device.map(str::to_string),
        })?;
        self.started.store(false, Ordering::SeqCst);
        Ok(0)
    }

    /// Reports every address of an endpoint whose host link exists as in the
    /// map, fast when settled (the model has no qdiscs).
    fn fastpath_sync(&self, endpoints: &[FastEndpoint]) -> Result<FastPathReport, DatapathError> {
        self.rec.enter(Call::FastPathSync(endpoints.to_vec()))?;
        if !self.started() {
            return Ok(FastPathReport::default());
        }
        let present: Vec<&FastEndpoint> = endpoints
            .iter()
            .filter(|e| self.links.has(&e.host_ifname))
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
        self.rec.enter(Call::FastPathForget(ips.to_vec()))
    }

    fn fastpath_stats(&self) -> Result<Option<FastPathStats>, DatapathError> {
        Ok(self.started().then(FastPathStats::default))
    }
}
