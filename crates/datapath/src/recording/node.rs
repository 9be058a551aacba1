//! The fake of [`NodeNet`]: records the setup, answers a configurable underlay.

use std::sync::{Arc, Mutex};

use super::{lock, Call, Recorder};
use crate::{DatapathError, NodeNet, NodeSetup};

/// Records calls into its [`Recorder`]. Cheap to clone (shared state).
#[derive(Clone, Debug, Default)]
pub struct FakeNode {
    rec: Recorder,
    underlay: Arc<Mutex<Option<(String, u32)>>>,
}

impl FakeNode {
    /// A fake with a recorder of its own.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fake recording into `rec` (shared with other fakes).
    pub fn with_recorder(rec: Recorder) -> Self {
        FakeNode {
            rec,
            underlay: Default::default(),
        }
    }

    pub fn recorder(&self) -> &Recorder {
        &self.rec
    }

    /// What `underlay_mtu(None)` answers (default `("eth0", 1500)`).
    pub fn set_underlay(&self, name: &str, mtu: u32) {
        *lock(&self.underlay) = Some((name.to_string(), mtu));
    }
}

impl NodeNet for FakeNode {
    fn prepare_node(&self, setup: &NodeSetup) -> Result<(), DatapathError> {
        self.rec.enter(Call::PrepareNode(setup.clone()))
    }

    fn underlay_mtu(&self, iface: Option<&str>) -> Result<(String, u32), DatapathError> {
        self.rec
            .enter(Call::UnderlayMtu(iface.map(str::to_string)))?;
        let (name, mtu) = lock(&self.underlay)
            .clone()
            .unwrap_or_else(|| ("eth0".into(), 1500));
        Ok((iface.map(str::to_string).unwrap_or(name), mtu))
    }
}
