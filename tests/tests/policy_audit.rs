//! Audit mode and the impact preview in a lab cluster, through the real API
//! server: a deny-all annotated `weft.dev/audit: "true"` drops nothing and
//! `weft observe --verdict AUDIT` shows the would-be drops naming it; then
//! `weft --lab X policy preview -f` of a deny policy (both nodes' flow rings
//! replayed) lists exactly the connections that policy, once applied,
//! drops.

mod common;
mod netpol_support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use netpol_support::{apply, kubectl, LabDriver};
use serde_json::json;
use weft_api::{Flow, PolicyPreview};
use weft_netpol_cases::Driver;
use weft_policy::Protocol;

const PATIENCE: Duration = Duration::from_secs(240);

fn weft(lab: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(bin_dir().join("weft"))
        .args(["--lab", lab])
        .args(args)
        .output()
        .expect("weft runs");
    assert!(
        out.status.success(),
        "weft {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Ingress to every pod of x only from x; `audit` annotated.
fn x_only_from_x(name: &str, audit: bool) -> serde_json::Value {
    let mut m = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {}}]}]}});
    if audit {
        m["metadata"]["annotations"] = json!({"weft.dev/audit": "true"});
    }
    m
}

/// The connections (client address, server address) a matrix found shut.
fn shut(
    k: &LabDriver,
    m: &std::collections::BTreeMap<(String, String), bool>,
) -> BTreeSet<(IpAddr, IpAddr)> {
    m.iter()
        .filter(|(_, ok)| !**ok)
        .map(|((f, t), _)| (k.pods[f].0, k.pods[t].0))
        .collect()
}

#[test]
fn audit_drops_nothing_and_preview_lists_what_the_policy_drops_privileged() {
    if !root_or_skip("audit_drops_nothing_and_preview_lists_what_the_policy_drops_privileged") {
        return;
    }
    let started = Instant::now();
    let lab = kube::kube_lab("aud", PATIENCE, |spec| {
        spec.nodes = 2;
        spec.etcd_members = 1;
    });
    let mut k = LabDriver::new(&lab, PATIENCE);
    let cells = ["x/a", "x/b", "y/a", "y/b"];
    k.start(&cells, &[], &[]);

    // an audited deny-all (all but x): compiled, in audit, drops nothing
    apply(&lab, &x_only_from_x("x-only", true));
    k.wait_compiled(&["x/x-only".into()]);
    for n in lab.nodes() {
        let l: weft_api::PolicyList = api_get_at(&n.socket, weft_api::paths::POLICY);
        assert!(
            l.policies.iter().all(|p| p.audit),
            "{}: {:?}",
            n.name,
            l.policies
        );
    }
    let m = k.matrix(80, Protocol::Tcp);
    assert!(shut(&k, &m).is_empty(), "audit dropped: {m:?}");
    // the would-be drops are reported as AUDIT, naming the policy
    let (ya, xa) = (k.pods["y/a"].0, k.pods["x/a"].0);
    let mut audits = Vec::new();
    let seen = eventually(Duration::from_secs(3), || {
        audits = String::from_utf8_lossy(&weft(
            &lab.name,
            &[
                "observe",
                "--verdict",
                "AUDIT",
                "--last",
                "500",
                "-o",
                "json",
            ],
        ))
        .lines()
        .map(|l| serde_json::from_str::<Flow>(l).expect("observe -o json prints flows"))
        .collect();
        audits
            .iter()
            .any(|f| f.source.ip == Some(ya) && f.destination.ip == Some(xa))
    });
    assert!(seen, "y/a -> x/a reported as AUDIT: {audits:#?}");
    for f in &audits {
        let p = f.policy.as_ref().expect("an AUDIT flow names its policy");
        assert_eq!(
            (p.namespace.as_str(), p.name.as_str()),
            ("x", "x-only"),
            "{f:?}"
        );
    }
    // back to no policy: the rings hold the matrix's connections
    kubectl(
        &lab,
        &["delete", "networkpolicy", "x-only", "-n", "x"],
        None,
    );
    k.wait_compiled(&[]);

    // the preview of the same policy enforced, from both nodes' rings
    let file = std::env::temp_dir().join(format!("{}-candidate.yaml", lab.name));
    std::fs::write(&file, x_only_from_x("x-only", false).to_string()).unwrap();
    let out = weft(
        &lab.name,
        &[
            "-o",
            "json",
            "policy",
            "preview",
            "-f",
            file.to_str().unwrap(),
        ],
    );
    std::fs::remove_file(&file).ok();
    let previews: Vec<PolicyPreview> = serde_json::from_slice(&out).expect("preview json");
    assert_eq!(previews.len(), 2, "one answer per node");
    let pod_ips: BTreeSet<IpAddr> = k.pods.values().map(|p| p.0).collect();
    let mut predicted = BTreeSet::new();
    for p in &previews {
        assert!(p.replayed > 0, "{}: nothing replayed", p.node);
        assert!(p.newly_allowed.is_empty(), "{p:#?}");
        for f in &p.newly_dropped {
            assert_eq!(f.decided_by, "ingress: x/x-only default deny", "{f:?}");
            let (s, d) = (f.flow.source.ip.unwrap(), f.flow.destination.ip.unwrap());
            if pod_ips.contains(&s) && f.flow.destination.port == 80 {
                predicted.insert((s, d));
            }
        }
    }

    // applied, it drops exactly those
    apply(&lab, &x_only_from_x("x-only", false));
    k.wait_compiled(&["x/x-only".into()]);
    let mut dropped = BTreeSet::new();
    let converged = eventually(Duration::from_secs(10), || {
        dropped = shut(&k, &k.matrix(80, Protocol::Tcp));
        dropped == predicted
    });
    assert!(
        converged,
        "preview predicted {predicted:?}, the applied policy drops {dropped:?}"
    );
    assert_eq!(predicted.len(), 4, "y/a and y/b to x/a and x/b");
    eprintln!(
        "audit and preview checked in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
