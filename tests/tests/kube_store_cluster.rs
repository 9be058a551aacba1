//! A 2-node lab cluster whose weftds keep every piece of cluster state in
//! the API server (`--store kubernetes`): no etcd of weft's own, only the
//! API server's. Pods on both nodes get distinct addresses from the one
//! store and talk across the nodes; the node registry is the Node objects
//! (weftd's VTEP MAC an annotation on each), the store's objects (blocks)
//! and the weftds' leases are visible with kubectl.

mod common;
mod kube_store_support;

use std::time::{Duration, Instant};

use common::*;
use kube_store_support::*;
use weft_lab::kube::KubeSpec;
use weft_lab::{Lab, LabSpec};

#[test]
fn kube_store_runs_a_two_node_cluster_without_etcd_privileged() {
    if !root_or_skip("kube_store_runs_a_two_node_cluster_without_etcd_privileged") {
        return;
    }
    let mut spec = LabSpec::new(&lab_name("kc"), &bin_dir());
    spec.nodes = 2;
    spec.etcd_members = 0;
    spec.kubernetes = Some(KubeSpec {
        ready_timeout: PATIENCE,
        store: true,
        ..KubeSpec::default()
    });
    let started = Instant::now();
    let lab = LabGuard(Lab::up(&spec, &mut |l| eprintln!("{l}")).expect("lab up"));
    eprintln!("lab cluster up in {:.1} s", started.elapsed().as_secs_f64());
    let nodes: Vec<String> = lab.nodes().into_iter().map(|n| n.name).collect();
    for i in 0..2 {
        let args = lab.nodes()[i]
            .weftd_pid
            .map(|pid| std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default());
        let args = args.unwrap_or_default().replace('\0', " ");
        assert!(args.contains("--store kubernetes"), "node {i}: {args}");
        assert!(!args.contains("etcd"), "no etcd of weft's own: {args}");
    }

    // both weftds present in the store, each on a Lease of its own
    within(Duration::from_secs(30), "2 weftd leases", || {
        let leases = get_json(
            &lab,
            &["leases", "-n", "weft-system", "-l", "weft.dev/store=weft"],
        );
        (leases["items"].as_array()?.len() == 2).then_some(())
    });
    // the node registry is the Node objects: each weftd wrote its VTEP MAC
    // on its Node, as field manager weftd; the store holds no node records
    for n in &nodes {
        let node = get_json(&lab, &["node", n, "--show-managed-fields"]);
        let mac = node["metadata"]["annotations"]["weft.dev/vtep-mac"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(mac.len(), 17, "a MAC on {n}: {}", node["metadata"]);
        let managers: Vec<&str> = node["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["manager"].as_str())
            .collect();
        assert!(managers.contains(&"weftd"), "{managers:?}");
        let internal = node["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["type"] == "InternalIP");
        assert!(internal, "{n} has an InternalIP: {}", node["status"]);
    }
    let weftnodes = get_json(&lab, &["weftnodes"]);
    assert_eq!(
        weftnodes["items"].as_array().map(Vec::len),
        Some(0),
        "no WeftNode objects on this store: {weftnodes}"
    );

    // one pod on each node
    create_namespace(&lab);
    for (i, n) in nodes.iter().enumerate() {
        let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("p{i}"), "namespace": NS},
            "spec": {"nodeName": n, "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "app", "image": "weft.test/agnhost",
                    "ports": [{"containerPort": 8080}]}]}});
        kubectl(
            &lab,
            &["apply", "-f", "-"],
            Some(pod.to_string().as_bytes()),
        );
    }
    let pods = within(POD_WAIT, "2 pods Ready", || {
        let p = get_json(&lab, &["pods", "-n", NS]);
        let items = p["items"].as_array()?.clone();
        (items.len() == 2 && items.iter().all(ready)).then_some(items)
    });
    let ips: Vec<&str> = pods
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str())
        .collect();
    assert_eq!(ips.len(), 2);
    assert_ne!(ips[0], ips[1], "one store, distinct addresses");

    // they talk across the nodes, both ways
    let (a, b) = (format!("{NS}/p0"), format!("{NS}/p1"));
    within(
        Duration::from_secs(30),
        "p0 reaches p1 across the nodes",
        || (ask(&lab, &a, &b, "hostname").ok()? == "p1").then_some(()),
    );
    assert_eq!(ask(&lab, &b, &a, "hostname"), Ok("p0".to_string()));

    // every node's view of IPAM is clean, and kubectl shows the store
    for i in 0..2 {
        assert_ipam_clean(&lab, i);
    }
    // kubectl shows the blocks with their node and use, one object each
    let table = kubectl(&lab, &["get", "ipamblocks"], None);
    eprintln!("{table}");
    for n in &nodes {
        assert!(
            table.lines().any(|l| l.contains(&format!(" {n} "))),
            "a block of {n} in {table}"
        );
    }
    assert!(table.contains("CIDR") && table.contains("USED"), "{table}");
    let head = kubectl(&lab, &["get", "weftstores"], None);
    assert!(head.contains("objects"), "{head}");

    kubectl(&lab, &["delete", "namespace", NS, "--wait=false"], None);
}
