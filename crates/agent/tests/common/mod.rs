//! The fixture of the agent's logic tests: an in-memory store and the
//! recording data path stand in for the disk and the kernel.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use weft_agent::agent::Agent;
use weft_agent::config::AgentConfig;
use weft_api::{AddRequest, Attachment, DelRequest, PodRef};
use weft_datapath::RecordingDatapath;
use weft_store::embedded::EmbeddedStore;
use weft_store::Store;

pub struct Fixture {
    pub agent: Arc<Agent>,
    pub dp: RecordingDatapath,
    pub ipam_store: Arc<dyn Store>,
    pub local_store: Arc<dyn Store>,
    pub spool: PathBuf,
}

pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "weft-agent-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn config(spool: &std::path::Path) -> AgentConfig {
    AgentConfig::parse_from([
        "weftd",
        "--node-name=n1",
        "--pool=10.10.0.0/24",
        "--pool=fd00:10::/120",
        "--block-prefix-v4=28",
        "--block-prefix-v6=124",
        &format!("--spool-dir={}", spool.display()),
        "--state-dir=/nonexistent-not-used",
    ])
}

pub fn fixture(tag: &str) -> Fixture {
    let spool = tmpdir(tag);
    let dp = RecordingDatapath::new();
    let ipam_store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let local_store: Arc<dyn Store> = Arc::new(EmbeddedStore::in_memory());
    let agent = weft_agent::build_with(
        &config(&spool),
        ipam_store.clone(),
        local_store.clone(),
        Arc::new(dp.clone()),
    )
    .unwrap();
    Fixture {
        agent,
        dp,
        ipam_store,
        local_store,
        spool,
    }
}

pub fn restart(f: &Fixture) -> Arc<Agent> {
    weft_agent::build_with(
        &config(&f.spool),
        f.ipam_store.clone(),
        f.local_store.clone(),
        Arc::new(f.dp.clone()),
    )
    .unwrap()
}

pub fn att(cid: &str) -> Attachment {
    Attachment {
        container_id: cid.into(),
        ifname: "eth0".into(),
    }
}

pub fn add_req(cid: &str) -> AddRequest {
    AddRequest {
        attachment: att(cid),
        // any path that exists: the recording data path never opens it
        netns: "/proc/self/ns/net".into(),
        network: "net1".into(),
        pod: PodRef {
            namespace: "default".into(),
            name: format!("pod-{cid}"),
            uid: String::new(),
        },
        mtu: None,
        want_ipv4: true,
        want_ipv6: true,
        requested_ips: vec![],
    }
}

pub fn del_req(cid: &str) -> DelRequest {
    DelRequest {
        attachment: att(cid),
        netns: String::new(),
        network: "net1".into(),
    }
}

/// Makes the endpoint of `cid` an hour old (past every grace period).
pub fn age(f: &Fixture, cid: &str) {
    let mut ep = f.agent.endpoints().get(&att(cid)).expect("endpoint");
    ep.created_at -= 3600;
    f.agent.endpoints().put(ep).unwrap();
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.spool);
    }
}
