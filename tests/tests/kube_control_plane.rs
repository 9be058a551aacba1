//! The lab's Kubernetes control plane: the real kube-apiserver,
//! controller-manager, scheduler (and their etcd) in the fabric namespace,
//! the real kube-proxy on every node. One lab for the whole binary (an API
//! server takes tens of seconds to start on a shared 2-CPU machine): the
//! checks run in sequence inside one test, each saying what it checks.

mod common;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use weft_lab::kube::{KubeSpec, ProxyMode};
use weft_lab::{pid_alive, Lab, LabSpec};

/// How long a step may wait for the control plane on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(180);

fn kubectl_ok(lab: &Lab, args: &[&str]) -> String {
    kube::kubectl(lab, args, None)
}

/// [`common::within`] of a condition, every 250 ms.
fn within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    within_every(Duration::from_millis(250), limit, what, || {
        f().then_some(())
    })
}

/// Every pid of the lab: weftds and the cluster's processes.
fn lab_pids(lab: &Lab) -> Vec<u32> {
    let kube = lab.kube().expect("a kubernetes lab");
    lab.nodes()
        .iter()
        .filter_map(|n| n.weftd_pid)
        .chain(kube.processes.iter().filter_map(|p| p.pid))
        .collect()
}

/// A TCP connection from node `i`'s namespace (Service traffic through
/// that node's kube-proxy rules).
fn connects_from_node(lab: &Lab, i: usize, addr: SocketAddr) -> bool {
    let netns = lab.nodes()[i].netns.clone();
    weft_datapath::netns::run_in(&netns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
    })
    .unwrap_or(false)
}

fn in_node(lab: &Lab, i: usize, cmd: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.nodes()[i].name])
        .args(cmd)
        .output()
        .expect("ip netns exec runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kube_control_plane_comes_up_serves_tls_rbac_survives_restart_and_goes_away_privileged() {
    if !root_or_skip(
        "kube_control_plane_comes_up_serves_tls_rbac_survives_restart_and_goes_away_privileged",
    ) {
        return;
    }
    let mut spec = LabSpec::new(&lab_name("k8"), &bin_dir());
    spec.nodes = 2;
    spec.kubernetes = Some(KubeSpec {
        ready_timeout: PATIENCE,
        ..KubeSpec::default()
    });
    let mut steps = Vec::new();
    let started = Instant::now();
    let lab = Lab::up(&spec, &mut |l| {
        eprintln!("{l}");
        if !l.starts_with(' ') {
            steps.push(l.to_string());
        }
    })
    .expect("lab up --kubernetes");
    let mut lab = LabGuard(lab);
    eprintln!("2-node lab cluster up in {:?}", started.elapsed());
    assert_eq!(steps.len(), spec.progress_steps(), "{steps:#?}");
    let kube = lab.kube().expect("the lab records its cluster").clone();
    assert_eq!(kube.server, "https://198.18.0.1:6443");
    assert!(kube.admin_kubeconfig.starts_with(&lab.dir));

    // the API server listens on the fabric's lab address only: nothing in
    // the root namespace
    assert!(!ip_out(&["-4", "addr", "show"]).contains("198.18."));
    let listening = Command::new("ss").args(["-Htln"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&listening.stdout).contains(":6443"),
        "the root namespace has no API server port"
    );

    // inside the lab, every listener is on a lab address or the namespace's
    // own loopback: nothing on a wildcard address
    let listeners = |netns: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", netns, "ss", "-Htuln"])
            .output()
            .expect("ss runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(String::from))
            .collect::<Vec<String>>()
    };
    let fab = listeners(&netns_name(&lab.fabric_netns));
    assert!(fab.iter().any(|a| a == "198.18.0.1:6443"), "{fab:?}");
    for a in &fab {
        assert!(
            a.starts_with("127.0.0.1:") || a == "198.18.0.1:6443",
            "fabric: {a}"
        );
    }
    for (i, n) in lab.nodes().iter().enumerate() {
        for a in listeners(&n.name) {
            assert!(
                a.starts_with(&format!("{}:", n.underlay_v4)),
                "node {i}: {a}"
            );
        }
    }

    // TLS with the lab CA, as admin (system:masters)
    assert_eq!(kubectl_ok(&lab, &["get", "--raw=/readyz"]).trim(), "ok");
    assert_eq!(
        kubectl_ok(&lab, &["auth", "can-i", "list", "secrets", "-A"]).trim(),
        "yes"
    );
    // a node's identity is system:node:<name>, and RBAC + the Node
    // authorizer keep it from listing secrets cluster-wide
    let node_kc = kube.node_kubeconfig(1).unwrap().to_path_buf();
    let whoami = lab
        .kubectl_as(
            &node_kc,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
            None,
        )
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout).trim(),
        format!("system:node:{}", lab.nodes()[1].name)
    );
    let denied = lab
        .kubectl_as(&node_kc, &["get", "secrets", "-A"], None)
        .unwrap();
    assert!(!denied.status.success(), "a node listed every secret");
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    // NodeRestriction: a node may write only its own Node object
    let n1_kc = kube.node_kubeconfig(0).unwrap().to_path_buf();
    let other = format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {}\n",
        lab.nodes()[1].name
    );
    let foreign = lab
        .kubectl_as(&n1_kc, &["create", "-f", "-"], Some(other.as_bytes()))
        .unwrap();
    let why = String::from_utf8_lossy(&foreign.stderr);
    assert!(!foreign.status.success(), "node 1 created node 2's object");
    assert!(why.contains("is not allowed to modify node"), "{why}");
    // no certificate at all: anonymous, and forbidden too
    let anon = lab
        .kubectl_as(
            std::path::Path::new("/dev/null"),
            &[
                "--server=https://198.18.0.1:6443",
                &format!("--certificate-authority={}", kube.ca.display()),
                "get",
                "secrets",
                "-A",
            ],
            None,
        )
        .unwrap();
    assert!(!anon.status.success());

    // the controllers and the scheduler are elected and at work
    for c in ["kube-controller-manager", "kube-scheduler"] {
        let holder = lab
            .leader_of(c)
            .unwrap_or_else(|| panic!("{c} holds its lease"));
        eprintln!("{c} lease held by {holder}");
    }
    // the service-account controller fills a new namespace, and tokens work
    kubectl_ok(&lab, &["create", "namespace", "kt"]);
    within(PATIENCE, "the default service account of kt", || {
        lab.kubectl(&["-n", "kt", "get", "serviceaccount", "default"])
            .is_ok_and(|o| o.status.success())
    });
    let token = kubectl_ok(&lab, &["-n", "kt", "create", "token", "default"]);
    let sa_kc = lab
        .write_token_kubeconfig("sa-kt-default", &token)
        .expect("a token kubeconfig");
    assert!(sa_kc.starts_with(&lab.dir));
    let as_sa = lab
        .kubectl_as(
            &sa_kc,
            &[
                "auth",
                "whoami",
                "-o",
                "jsonpath={.status.userInfo.username}",
            ],
            None,
        )
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&as_sa.stdout).trim(),
        "system:serviceaccount:kt:default",
        "{}",
        String::from_utf8_lossy(&as_sa.stderr)
    );
    // a service account no role binds may not even list pods
    let sa_pods = lab
        .kubectl_as(&sa_kc, &["-n", "kt", "get", "pods"], None)
        .unwrap();
    assert!(
        String::from_utf8_lossy(&sa_pods.stderr).contains("forbidden"),
        "{}",
        String::from_utf8_lossy(&sa_pods.stderr)
    );
    // Deployment -> ReplicaSet -> Pods, and the scheduler looks at them
    // (the lab kubelets run them; tests/kube_pods.rs checks that)
    kubectl_ok(
        &lab,
        &[
            "-n",
            "kt",
            "create",
            "deployment",
            "web",
            "--image=none",
            "--replicas=2",
        ],
    );
    within(
        PATIENCE,
        "the deployment's pods, seen by the scheduler",
        || {
            lab.kubectl(&[
            "-n",
            "kt",
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type==\"PodScheduled\")].status}{\"\\n\"}{end}",
        ])
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().count() == 2)
        },
    );

    // kube-proxy on every node: healthy, its nftables table programmed with
    // the kubernetes Service, and Service traffic DNATed to the API server
    let service = SocketAddr::new("10.96.0.1".parse::<IpAddr>().unwrap(), 443);
    for i in 0..2 {
        assert!(kube.process("kube-proxy", Some(i)).unwrap().alive());
        assert_eq!(lab.kube_proxy_health(i), Some(200), "node {i}");
        let rules = in_node(&lab, i, &["nft", "list", "table", "ip", "kube-proxy"]);
        assert!(rules.contains("10.96.0.1"), "node {i}: {rules}");
        within(PATIENCE, "10.96.0.1:443 from a node", || {
            connects_from_node(&lab, i, service)
        });
    }

    // kube-proxy in iptables mode (node 2): it takes over from nftables
    lab.stop_node_agent(1, "kube-proxy").unwrap();
    lab.start_kube_proxy(1, ProxyMode::Iptables).unwrap();
    within(PATIENCE, "kube-proxy (iptables) healthy", || {
        lab.kube_proxy_health(1) == Some(200)
    });
    within(
        PATIENCE,
        "iptables rules for the kubernetes Service",
        || in_node(&lab, 1, &["iptables-save", "-t", "nat"]).contains("10.96.0.1/32"),
    );
    assert!(connects_from_node(&lab, 1, service));

    // the API server stops and comes back with everything it stored
    let old = kube.process("kube-apiserver", None).unwrap().pid.unwrap();
    lab.stop_apiserver().unwrap();
    assert!(!pid_alive(old));
    assert!(!lab.apiserver_ready());
    let restart = Instant::now();
    lab.start_apiserver(PATIENCE)
        .expect("the API server starts again");
    eprintln!("API server restarted in {:?}", restart.elapsed());
    assert!(kubectl_ok(&lab, &["get", "namespaces"]).contains("kt"));
    assert!(kubectl_ok(&lab, &["-n", "kt", "get", "deployments"]).contains("web"));

    // the CLI: `weft lab kubectl` passes the arguments and the exit code
    let weft = |args: &[&str]| {
        Command::new(bin_dir().join("weft"))
            .args(["lab", "kubectl", "--name", &lab.name, "--"])
            .args(args)
            .output()
            .expect("weft runs")
    };
    let ok = weft(&["get", "namespace", "kt", "-o", "name"]);
    assert!(ok.status.success());
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "namespace/kt");
    let missing = weft(&["get", "namespace", "no-such-namespace"]);
    assert_eq!(missing.status.code(), Some(1));

    // down: every process and namespace of the lab is gone
    let name = lab.name.clone();
    let pids = lab_pids(&lab);
    assert_eq!(
        pids.len(),
        2 + 4 + 2 + 2,
        "2 weftd, 4 control plane, 2 kube-proxy, 2 lab kubelets: {pids:?}"
    );
    let start = Instant::now();
    Lab::down(&name).expect("down");
    eprintln!("down took {:?}", start.elapsed());
    for pid in &pids {
        assert!(
            !pid_alive(*pid),
            "process {pid} of lab {name} survived down"
        );
    }
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{name}-")))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(!Lab::dir_of(&name).exists(), "lab directory left");
}
