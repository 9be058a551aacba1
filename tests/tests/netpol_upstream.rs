//! Every case of the upstream NetworkPolicy e2e suite (kubernetes/kubernetes
//! test/e2e/network/netpol/network_policy.go, the 48 of "NetworkPolicy
//! between server and client" and its UDP and SCTP variants) in a lab
//! cluster: the real API server, the lab kubelet serving 80 and 81 over TCP
//! and UDP in pods a, b, c of namespaces x, y, z spread over two nodes,
//! policies applied with kubectl, weftd compiling them into the eBPF policy
//! maps, and the full matrix probed in parallel and compared with the
//! case's table (the same steps and tables the policy crate computes:
//! `crates/netpol-cases`).
//!
//! One cluster for the whole file (a control plane takes tens of seconds to
//! start on a shared 2-CPU machine), so one test runs the cases in order,
//! each reset to no policy and the suite's labels first, and reports every
//! case by its upstream name; `WEFT_NETPOL_CASES=<substring>` runs only the
//! cases whose name contains it. SCTP cells are not probed (no SCTP in this
//! kernel): each SCTP case still checks that its SCTP-only rules open
//! neither TCP nor UDP.

mod common;
mod netpol_support;

use std::time::{Duration, Instant};

use common::*;
use netpol_support::LabDriver;

/// How long the control plane may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(240);

#[test]
fn upstream_netpol_cases_in_a_lab_cluster_privileged() {
    if !root_or_skip("upstream_netpol_cases_in_a_lab_cluster_privileged") {
        return;
    }
    let filter = std::env::var("WEFT_NETPOL_CASES").unwrap_or_default();
    let lab = kube::kube_lab("np", PATIENCE, |spec| {
        spec.nodes = 2;
        // one etcd the weftds share: addresses and identities agreed cluster-wide
        spec.etcd_members = 1;
    });

    // weftd of every node enforces (the programs loaded, the adapter runs)
    for n in lab.nodes() {
        let l: weft_api::PolicyList = api_get_at(&n.socket, weft_api::paths::POLICY);
        assert!(l.enabled, "{}: policy not enforced: {}", n.name, l.reason);
    }
    let t = Instant::now();
    let mut k = LabDriver::new(&lab, PATIENCE);
    eprintln!("9 pods Running in {:.1} s", t.elapsed().as_secs_f64());

    // the harness itself: with no policy every probe succeeds, both ways
    let all: Vec<String> = k.pods.keys().cloned().collect();
    let all_refs: Vec<&str> = all.iter().map(String::as_str).collect();
    weft_netpol_cases::Driver::start(&mut k, &all_refs, &[], &[]);
    for (port, proto) in [
        (80, weft_policy::Protocol::Tcp),
        (81, weft_policy::Protocol::Udp),
    ] {
        let m = k.matrix(port, proto);
        let shut: Vec<_> = m.iter().filter(|(_, ok)| !**ok).map(|(c, _)| c).collect();
        assert!(
            shut.is_empty(),
            "{proto:?}/{port} without any policy: {shut:?}"
        );
    }

    let t = Instant::now();
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, case) in weft_netpol_cases::ALL {
        if !name.contains(filter.as_str()) {
            continue;
        }
        ran += 1;
        let c = Instant::now();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&mut k)));
        let secs = c.elapsed().as_secs_f64();
        match res {
            Ok(()) => eprintln!("ok   {name} ({secs:.1} s)"),
            Err(e) => {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("FAIL {name} ({secs:.1} s): {why}");
                failed.push(name.to_string());
            }
        }
    }
    eprintln!(
        "{ran} cases in {:.1} s ({} failed)",
        t.elapsed().as_secs_f64(),
        failed.len()
    );
    let mut lag = k.compile_lag.clone();
    lag.sort();
    if !lag.is_empty() {
        eprintln!(
            "new policy to compiled on both nodes (kubectl apply returned -> weft policy list shows it): median {:.0} ms, max {:.0} ms over {}",
            lag[lag.len() / 2].as_secs_f64() * 1e3,
            lag[lag.len() - 1].as_secs_f64() * 1e3,
            lag.len()
        );
    }
    assert!(ran > 0, "no case matches WEFT_NETPOL_CASES={filter:?}");
    assert!(failed.is_empty(), "cases that failed: {failed:#?}");

    // no open window at start: a pod created while a default deny selects
    // it is denied from its very first probe (its policy was in the maps
    // before its CNI ADD returned, and its address is only known to the
    // API once the ADD has returned)
    use weft_netpol_cases::builders::*;
    use weft_netpol_cases::Driver;
    k.start(&["x/a", "y/a"], &[], &[]);
    k.create(np("x", "deny-ingress", weft_policy::LabelSelector::all()).ingress_rules(vec![]));
    // three pods, one after the other: each must be shut from the start
    for name in ["fresh-0", "fresh-1", "fresh-2"] {
        netpol_support::apply(&lab, &netpol_support::pod_manifest("x", name));
        let fresh = within(PATIENCE, &format!("x/{name} Running"), || {
            let v: serde_json::Value = serde_json::from_str(&netpol_support::kubectl(
                &lab,
                &["get", "pod", "-n", "x", name, "-o", "json"],
                None,
            ))
            .ok()?;
            let ip: std::net::IpAddr = v["status"]["podIP"].as_str()?.parse().ok()?;
            (v["status"]["phase"] == "Running").then_some(ip)
        });
        let client_ns = weft_lab::kubelet::netns_of(&lab, "y/a").expect("y/a's netns");
        let first = weft_lab::probe::probe(
            &client_ns,
            std::net::SocketAddr::new(fresh, 80),
            weft_lab::probe::Transport::Tcp,
            netpol_support::PROBE_TIMEOUT,
            Some("hostname"),
        )
        .expect("probe runs");
        // dropped by policy (a pod not serving yet would refuse instead)
        assert_eq!(
            first,
            weft_lab::probe::Outcome::TimedOut,
            "the first probe of a new isolated pod"
        );
        netpol_support::kubectl(
            &lab,
            &["delete", "pod", "-n", "x", name, "--wait=true"],
            None,
        );
    }

    // the CLI people use, through the lab: list, show, explain
    k.start(&["x/a", "x/b", "y/a"], &[], &[]);
    k.create(
        np("x", "x-a-from-x-b", ml(&[("pod", "a")]))
            .ingress_rules(vec![from(vec![pods(ml(&[("pod", "b")]))])]),
    );
    let (code, out) = weft(&lab.name, &["policy", "list"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("x/x-a-from-x-b") && out.contains("x/a"),
        "{out}"
    );
    let (code, out) = weft(&lab.name, &["policy", "show", "x/x-a-from-x-b"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("rule 0 (ingress[0]) of x/x-a-from-x-b"),
        "{out}"
    );
    let (code, out) = weft(
        &lab.name,
        &[
            "policy", "explain", "--from", "y/a", "--to", "x/a", "--port", "80/tcp",
        ],
    );
    assert_eq!(code, 1, "denied exits 1: {out}");
    assert!(
        out.contains("denied at ingress") && out.contains("default deny of x/x-a-from-x-b"),
        "{out}"
    );
    let (code, out) = weft(
        &lab.name,
        &[
            "-o", "json", "policy", "explain", "--from", "x/b", "--to", "x/a", "--port", "80/tcp",
        ],
    );
    assert_eq!(code, 0, "allowed exits 0: {out}");
    let e: weft_api::PolicyExplain = serde_json::from_str(&out).expect("json");
    assert!(e.allowed);
    assert!(
        e.ingress
            .as_ref()
            .is_some_and(|s| s.verdict == "allowed by rule 0 (ingress[0]) of x/x-a-from-x-b"),
        "{e:?}"
    );
}

/// `weft --lab NAME <args>`: exit code and stdout.
fn weft(lab: &str, args: &[&str]) -> (i32, String) {
    let o = std::process::Command::new(bin_dir().join("weft"))
        .args(["--lab", lab])
        .args(args)
        .output()
        .expect("weft runs");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
    )
}
