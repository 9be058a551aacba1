//! The data path's side of `--services on`: the service maps and the
//! programs that read them.

use crate::config::AgentConfig;

use super::KernelMaps;

/// Opens the service maps (pinned, so a restart finds them) and attaches
/// the programs: socket-level under `--cgroup-root`, tc on the node's
/// devices.
pub fn open(cfg: &AgentConfig) -> anyhow::Result<Box<dyn KernelMaps + Send>> {
    let root = super::check_cgroup_root(&cfg.cgroup_root())?;
    anyhow::bail!(
        "this weftd has no Service programs yet (cgroup root {}): run with --services off and kube-proxy",
        root.display()
    )
}
