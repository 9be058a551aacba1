//! `weft store migrate` both ways in a 2-node lab cluster: weftds on the
//! lab's etcd, pods on both nodes; every weftd stopped, the state moved to
//! the API server (`--store kubernetes`) and back to etcd. The pods keep
//! their addresses through both moves, IPAM stays clean on every node, pods
//! keep talking and new pods get other addresses. A migration while a
//! weftd is still registered is refused.

mod common;
mod kube_store_support;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use kube_store_support::*;
use weft_lab::kube::KubeSpec;
use weft_lab::{Lab, LabSpec};

/// `weft store migrate` from node 0's namespace (etcd and the API server
/// listen only inside the lab): (success, stdout + stderr).
fn migrate(lab: &Lab, from: &str, to: &str) -> (bool, String) {
    let kc = lab.kube().expect("a cluster").admin_kubeconfig.clone();
    let o = Command::new("ip")
        .args(["netns", "exec", &lab.nodes()[0].name])
        .arg(bin_dir().join("weft"))
        .args(["store", "migrate", "--from", from, "--to", to])
        .arg(format!(
            "--etcd-endpoints={}",
            lab.etcd_endpoints().join(",")
        ))
        .arg(format!("--kubeconfig={}", kc.display()))
        .output()
        .expect("weft runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn stop_all(lab: &mut Lab) {
    for i in 0..lab.nodes().len() {
        lab.stop_weftd_on(i).expect("stop weftd");
    }
}

fn start_all(lab: &mut Lab) {
    for i in 0..lab.nodes().len() {
        lab.start_weftd_on(i).expect("start weftd");
    }
}

/// Stops every weftd, checks a migration is refused while their
/// registrations live, then migrates once they expired, and twice.
fn move_state(lab: &mut Lab, from: &str, to: &str) {
    stop_all(lab);
    let (ok, out) = migrate(lab, from, to);
    assert!(
        !ok && out.contains("stop every weftd"),
        "refused at once: {out}"
    );
    let t = Instant::now();
    let mut last = String::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    let out = loop {
        let (ok, out) = migrate(lab, from, to);
        if ok {
            break out;
        }
        if Instant::now() >= deadline {
            let leases = lab.kubectl(&["-n", "weft-system", "get", "leases", "-o", "yaml"]);
            let leases = leases.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            let ps = Command::new("pgrep")
                .args(["-a", "weftd"])
                .output()
                .unwrap();
            panic!(
                "the registrations expire within 40 s: {last}\n{leases:?}\n{}",
                String::from_utf8_lossy(&ps.stdout)
            );
        }
        last = out;
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "{from} -> {to} after {:.1} s: {out}",
        t.elapsed().as_secs_f64()
    );
    let (ok, again) = migrate(lab, from, to);
    assert!(
        ok && again.contains("0 keys copied"),
        "twice is a no-op: {again}"
    );
}

/// The pods hold what they held, every node's IPAM is clean, and the two
/// first pods talk across the nodes.
fn still_whole(lab: &Lab, before: &std::collections::BTreeMap<String, Vec<String>>) {
    let now = held(lab);
    for (pod, ips) in before {
        assert_eq!(now.get(pod), Some(ips), "{pod} keeps its addresses");
    }
    for i in 0..2 {
        assert_ipam_clean(lab, i);
    }
    let (a, b) = (format!("{NS}/m0"), format!("{NS}/m1"));
    within(Duration::from_secs(30), "m0 reaches m1", || {
        (ask(lab, &a, &b, "hostname").ok()? == "m1").then_some(())
    });
    assert_eq!(ask(lab, &b, &a, "hostname"), Ok("m0".to_string()));
}

#[test]
fn kube_store_migrates_from_etcd_and_back_with_pods_keeping_addresses_privileged() {
    if !root_or_skip(
        "kube_store_migrates_from_etcd_and_back_with_pods_keeping_addresses_privileged",
    ) {
        return;
    }
    let mut spec = LabSpec::new(&lab_name("km"), &bin_dir());
    spec.nodes = 2;
    spec.etcd_members = 1;
    spec.kubernetes = Some(KubeSpec {
        ready_timeout: PATIENCE,
        ..KubeSpec::default()
    });
    let mut lab = LabGuard(Lab::up(&spec, &mut |l| eprintln!("{l}")).expect("lab up"));
    let nodes: Vec<String> = lab.nodes().into_iter().map(|n| n.name).collect();
    create_namespace(&lab);
    pod_on(&lab, "m0", &nodes[0]);
    pod_on(&lab, "m1", &nodes[1]);
    ready_pods(&lab, 2);
    let before = held(&lab);
    assert_eq!(before.len(), 2, "{before:?}");

    // etcd -> the API server
    lab.use_kubernetes_store().expect("store CRD and flags");
    move_state(&mut lab, "etcd", "kubernetes");
    start_all(&mut lab);
    still_whole(&lab, &before);
    pod_on(&lab, "m2", &nodes[0]);
    ready_pods(&lab, 3);
    let with_new = held(&lab);
    for ip in &with_new["m2"] {
        assert!(!before.values().flatten().any(|b| b == ip), "{ip} is new");
    }

    // and back to etcd: the pod made on the API server's store keeps its
    // address too
    lab.leave_kubernetes_store().expect("etcd flags");
    move_state(&mut lab, "kubernetes", "etcd");
    start_all(&mut lab);
    still_whole(&lab, &with_new);

    kubectl(&lab, &["delete", "namespace", NS, "--wait=false"], None);
}
