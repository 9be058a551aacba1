//! The agent's side of the eBPF fast path: whether it runs, and keeping its
//! endpoint map in step with the endpoint table (see
//! `weft_datapath::fastpath` for what the programs do).
//!
//! An endpoint turns fast only once it has existed for [`SETTLE_SECONDS`]:
//! the runtime runs chained plugins (bandwidth, portmap) after weft's ADD, and
//! the shaping the bandwidth plugin installs must be seen before traffic may
//! skip it. A sync every [`SYNC_EVERY`] picks up new endpoints and shaping
//! added later; a DEL takes the pod's addresses out at once.

use std::sync::Arc;
use std::time::Duration;

use weft_datapath::{FastEndpoint, FastPathReport, FastPathSetup};

use crate::agent::{unix_now, Agent};
use crate::endpoint::Endpoint;
// the state lives in its own module so that agent.rs, which holds it, does
// not import this one (which drives the agent): no import circle
use crate::config::FastPathMode;
pub use crate::fastpath_state::FastPathState;

/// Seconds an endpoint exists before it may be fast.
pub const SETTLE_SECONDS: u64 = 2;
/// How often the map follows the endpoint table and the veths' qdiscs.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// The fast path's view of the endpoint table at `now` (unix seconds).
pub fn fast_endpoints(eps: &[Endpoint], now: u64) -> Vec<FastEndpoint> {
    eps.iter()
        .map(|ep| FastEndpoint {
            host_ifname: ep.host_ifname.clone(),
            pod_mac: ep.mac,
            ips: ep.ips.iter().map(|n| n.addr()).collect(),
            settled: now.saturating_sub(ep.created_at) >= SETTLE_SECONDS,
        })
        .collect()
}

/// Starts (or, with `off`, removes) the fast path at agent start, after the
/// endpoints are reconciled; a running fast path gets its first sync here,
/// which also replaces a previous agent's programs. `prefix` names weft's
/// host veths.
pub fn start(
    agent: &Arc<Agent>,
    mode: FastPathMode,
    setup: FastPathSetup,
    prefix: &str,
) -> anyhow::Result<()> {
    let dp = agent.datapath();
    let remote = setup.remote_device.clone();
    let stop = |why: String| {
        match dp.fastpath_stop(prefix, remote.as_deref()) {
            Ok(n) if n > 0 => tracing::info!(detached = n, "removed earlier eBPF programs"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot remove earlier eBPF programs"),
        }
        agent.fastpath().set(false, Some(why));
    };
    if mode == FastPathMode::Off {
        stop("--fastpath off".into());
        return Ok(());
    }
    let started = dp
        .fastpath_start(&setup)
        .map_err(anyhow::Error::from)
        .and_then(|()| sync(agent).map_err(anyhow::Error::from));
    match started {
        Ok(r) => {
            agent.fastpath().set(true, None);
            tracing::info!(addresses = r.addresses, fast = r.fast, veths = r.attached,
                remote_device = ?setup.remote_device, "eBPF fast path running");
            Ok(())
        }
        Err(e) if mode == FastPathMode::On => {
            stop(format!("failed to start: {e:#}"));
            Err(e.context("--fastpath on: the eBPF fast path did not start"))
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"),
                "eBPF fast path unavailable; pods use the kernel path (--fastpath off silences this)");
            stop(format!("unavailable: {e:#}"));
            Ok(())
        }
    }
}

/// One sync of the map with the endpoint table.
pub fn sync(agent: &Agent) -> Result<FastPathReport, weft_datapath::DatapathError> {
    let eps = fast_endpoints(&agent.endpoints().list(), unix_now());
    let r = agent.datapath().fastpath_sync(&eps)?;
    if r.changes > 0 || r.attached > 0 {
        tracing::debug!(
            changes = r.changes,
            attached = r.attached,
            fast = r.fast,
            "fast path synced"
        );
    }
    agent.fastpath().lock().last = r.clone();
    Ok(r)
}

/// Syncs every [`SYNC_EVERY`] until the process ends, while the fast path runs.
pub fn start_sync_loop(agent: Arc<Agent>) {
    if !agent.fastpath().is_active() {
        return;
    }
    std::thread::Builder::new()
        .name("fastpath".into())
        .spawn(move || loop {
            std::thread::sleep(SYNC_EVERY);
            if let Err(e) = sync(&agent) {
                tracing::warn!(error = %e, "fast path sync failed");
            }
        })
        .expect("spawn fast path sync");
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::{Attachment, PodRef};

    fn ep(host: &str, mac: [u8; 6], created_at: u64) -> Endpoint {
        Endpoint {
            attachment: Attachment {
                container_id: host.into(),
                ifname: "eth0".into(),
            },
            pod: PodRef::default(),
            network: "weft".into(),
            netns: "/run/netns/x".into(),
            host_ifname: host.into(),
            mac,
            mtu: 1500,
            ips: vec![
                "10.244.0.5/32".parse().unwrap(),
                "fd00::5/128".parse().unwrap(),
            ],
            created_at,
        }
    }

    #[test]
    fn endpoints_settle_after_the_chained_plugins_had_their_time() {
        let eps = [
            ep("weftold", [2, 0, 0, 0, 0, 1], 100),
            ep("weftnew", [2, 0, 0, 0, 0, 2], 109),
        ];
        // (an unreadable MAC no longer reaches here: the record that holds
        // one is refused when the table loads, see `endpoint`)
        let f = fast_endpoints(&eps, 110);
        assert_eq!(f.len(), 2);
        assert!(f[0].settled);
        assert!(!f[1].settled, "1 s old");
        assert_eq!(f[0].pod_mac, [2, 0, 0, 0, 0, 1]);
        assert_eq!(f[0].ips.len(), 2);
        assert!(fast_endpoints(&eps, 111)[1].settled);
        // a clock that went backwards never makes an endpoint settled
        assert!(!fast_endpoints(&eps, 50)[0].settled);
    }
}
