//! Services through the API server with the real kube-proxy (nftables
//! mode) on every node and weftd `--services off`: the harness of
//! `services_support` checked against the reference implementation, and
//! weft's data path (fast path, NAT) shown correct under kube-proxy's NAT.
//! One 3-node lab cluster; the cases run in sequence (see
//! `services_weft.rs` for the table of upstream cases).

mod common;
mod services_support;

use common::*;
use services_support::cases::{self, Proxy};
use services_support::Cluster;
use weft_lab::kube::{KubeSpec, ServiceProxy};
use weft_lab::{Lab, LabSpec};

#[test]
fn services_through_kube_proxy_pass_the_upstream_cases_privileged() {
    if !root_or_skip("services_through_kube_proxy_pass_the_upstream_cases_privileged") {
        return;
    }
    let mut spec = LabSpec::new(&lab_name("skp"), &bin_dir());
    spec.nodes = 3;
    spec.etcd_members = 1;
    spec.kubernetes = Some(KubeSpec {
        services: ServiceProxy::KubeProxy,
        ..KubeSpec::default()
    });
    let lab = LabGuard(Lab::up(&spec, &mut |_| {}).expect("lab up"));
    let mut c = Cluster::new(lab);
    cases::run_all(&mut c, Proxy::KubeProxy);
}
