//! ClusterNetworkPolicy enforced through the kernel: network-policy-api's
//! conformance test CNPAdminTierIntegration
//! (conformance/tests/admin-network-policy-standard-integration.go, the
//! manifests of `api_integration/standard-anp-np-banp`) in a lab cluster.
//! The CRD is installed as published, the policies go through the real API
//! server (v1alpha2), weftd compiles them with the NetworkPolicies into the
//! eBPF maps, and every verdict is a real connection between pods. Upstream's
//! houses map onto the lab's world: gryffindor is namespace x, slytherin y.
//!
//! 1. An Admin Deny beats a NetworkPolicy allow (both directions).
//! 2. An Admin Pass falls through to the NetworkPolicy, which allows.
//! 3. With the NetworkPolicy gone, the Pass falls to the Baseline Deny.
//! 4. A Baseline Deny applies only where no NetworkPolicy selects the pod
//!    (not upstream's, the tier rule it rests on): a NetworkPolicy on x/a
//!    alone decides x/a's ingress; x/b keeps the Baseline's deny.

mod common;
mod netpol_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use netpol_support::{apply, kubectl, LabDriver, PROBE_TIMEOUT};
use serde_json::{json, Value};
use weft_lab::probe::{Outcome, Transport};

const PATIENCE: Duration = Duration::from_secs(240);
/// How long a change may take to be enforced (upstream polls too).
const CONVERGE: Duration = Duration::from_secs(30);

/// Upstream's `pass-example` (Admin) or `default` (Baseline): deny from and
/// to slytherin (y) for gryffindor (x).
fn cnp(name: &str, tier: &str, action: &str) -> Value {
    let y = json!([{"namespaces": {"matchLabels": {"ns": "y"}}}]);
    json!({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
        "metadata": {"name": name},
        "spec": {"tier": tier, "priority": 10,
            "subject": {"namespaces": {"matchLabels": {"ns": "x"}}},
            "ingress": [{"name": "deny-all-ingress-from-slytherin", "action": action, "from": y}],
            "egress": [{"name": "deny-all-egress-to-slytherin", "action": action, "to": y}]}})
}

/// Upstream's `allow-gress-from-to-slytherin-to-gryffindor`: every pod of
/// x, both ways, with y only.
fn allow_y_both_ways() -> Value {
    let y = json!([{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]);
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": "x", "name": "allow-gress-from-to-slytherin-to-gryffindor"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": y}], "egress": [{"to": y}]}})
}

/// Whether `from` reaches `to` on TCP `port` (the server's answer, so a
/// refusal or a timeout both count as not).
fn reaches(k: &LabDriver, from: &str, to: &str, port: u16) -> bool {
    let (ip, _) = &k.pods[to];
    let name = to.split_once('/').map(|(_, n)| n).unwrap_or_default();
    matches!(
        weft_lab::probe::probe(&k.pods[from].1, SocketAddr::new(*ip, port), Transport::Tcp,
            PROBE_TIMEOUT, Some("hostname")),
        Ok(Outcome::Connected { reply: Some(ref r) }) if r == name
    )
}

/// Probes every cell until all match at once, or fails after [`CONVERGE`]
/// naming the cells that differ.
fn expect(k: &LabDriver, step: &str, cells: &[(&str, &str, u16, bool)]) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let wrong: Vec<String> = cells
            .iter()
            .filter(|(f, t, p, want)| reaches(k, f, t, *p) != *want)
            .map(|(f, t, p, want)| {
                format!(
                    "{f} -> {t} tcp/{p} should be {}",
                    if *want { "allowed" } else { "denied" }
                )
            })
            .collect();
        if wrong.is_empty() {
            eprintln!("ok   {step}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{step}: not within {CONVERGE:?}: {wrong:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn cnp_admin_tier_integration_in_a_lab_cluster_privileged() {
    if !root_or_skip("cnp_admin_tier_integration_in_a_lab_cluster_privileged") {
        return;
    }
    let lab = kube::kube_lab("ce", PATIENCE, |_| {});
    kube::install_cnp_crd(&lab);
    let k = LabDriver::new(&lab, PATIENCE);

    // the world before any policy: all open
    let probes = [
        ("y/a", "x/a", 80),
        ("y/b", "x/a", 81),
        ("x/a", "y/a", 80),
        ("x/b", "y/a", 81),
    ];
    let all = |want: bool| probes.map(|(f, t, p)| (f, t, p, want));
    expect(&k, "no policy: all open", &all(true));

    // 1. "Should Deny traffic from slytherin to gryffindor respecting admin
    // CNP" and "... to slytherin from gryffindor": the NetworkPolicy allows
    // y both ways, the Admin Deny wins
    apply(&lab, &allow_y_both_ways());
    k.wait_compiled(&["x/allow-gress-from-to-slytherin-to-gryffindor".to_string()]);
    apply(&lab, &cnp("pass-example", "Admin", "Deny"));
    apply(&lab, &cnp("default", "Baseline", "Deny"));
    expect(
        &k,
        "Admin Deny beats the NetworkPolicy's allow",
        &[
            ("y/a", "x/a", 80, false),
            ("y/b", "x/a", 81, false),
            ("x/a", "y/a", 80, false),
            ("x/b", "y/a", 81, false),
            // not subject to anything: y to z stays open
            ("y/a", "z/a", 80, true),
        ],
    );

    // 2. "Should support a 'pass-ingress' / 'pass-egress' policy for admin
    // CNP and respect the match for network policy"
    apply(&lab, &cnp("pass-example", "Admin", "Pass"));
    expect(
        &k,
        "Admin Pass falls through to the NetworkPolicy's allow",
        &all(true),
    );

    // 3. "... and respect the match for baseline cluster network policy":
    // no NetworkPolicy, so the Pass falls to the Baseline Deny
    kubectl(
        &lab,
        &[
            "delete",
            "networkpolicy",
            "-n",
            "x",
            "allow-gress-from-to-slytherin-to-gryffindor",
        ],
        None,
    );
    k.wait_compiled(&[]);
    expect(
        &k,
        "Admin Pass falls through to the Baseline Deny",
        &[
            ("y/a", "x/a", 80, false),
            ("y/b", "x/a", 81, false),
            ("x/a", "y/a", 80, false),
            ("x/b", "y/a", 81, false),
            // the Baseline names y only: z reaches x
            ("z/a", "x/a", 80, true),
        ],
    );

    // 4. a NetworkPolicy selecting x/a alone (ingress from y): x/a's
    // ingress is the NetworkPolicy's to decide, x/b's stays the Baseline's
    apply(
        &lab,
        &json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"namespace": "x", "name": "a-from-y"},
            "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}}),
    );
    k.wait_compiled(&["x/a-from-y".to_string()]);
    expect(
        &k,
        "Baseline Deny only where no NetworkPolicy selects the pod",
        &[
            ("y/a", "x/a", 80, true),
            ("y/b", "x/a", 81, true),
            ("y/a", "x/b", 80, false),
            ("y/b", "x/c", 81, false),
            // the NetworkPolicy isolates x/a's ingress: z is not in it
            ("z/a", "x/a", 80, false),
            ("z/a", "x/b", 80, true),
            // egress of x/a: no NetworkPolicy for it, the Baseline denies y
            ("x/a", "y/a", 80, false),
        ],
    );
    kubectl(
        &lab,
        &["delete", "clusternetworkpolicy", "pass-example", "default"],
        None,
    );
    kubectl(
        &lab,
        &["delete", "networkpolicy", "-n", "x", "a-from-y"],
        None,
    );
    k.wait_compiled(&[]);
    expect(&k, "every policy gone: all open", &all(true));
}
