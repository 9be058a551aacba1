//! `weft observe --cluster` end to end through the real API server: a
//! two-node lab cluster whose weftds serve their flows over TLS (a CA and a
//! certificate per node naming its InternalIP, made here in a temp dir
//! removed after), a NetworkPolicy drop made on one node, and the CLI run
//! in the other node's namespace, dialling both weftds at the Nodes'
//! addresses. A ServiceAccount bound to the ClusterRole weft-flow-reader
//! sees the drop naming the policy; one without it is refused by the
//! SubjectAccessReview (403, said in words); a CA that did not sign the
//! weftds' certificates is refused with a message to pass the cluster's.
//! And, as the DaemonSet runs before its Secret exists, a weftd told its
//! certificate is optional starts without it and says so.

mod common;
mod netpol_support;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use netpol_support::{apply, kubectl, LabDriver};
use serde_json::json;
use weft_api::{Flow, Verdict};
use weft_lab::probe::Transport;
use weft_lab::Lab;

const PATIENCE: Duration = Duration::from_secs(240);
const FLOWS_PORT: u16 = 9965;

/// Removes a directory tree when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process this test started, killed by its id and reaped when dropped.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CA (its PEM written to `dir/<tag>-ca.crt`) and, for each address, a
/// server certificate and key it signed; returns the CA's path and the
/// pairs.
fn make_ca(dir: &Path, tag: &str, addrs: &[IpAddr]) -> (PathBuf, Vec<(PathBuf, PathBuf)>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let ca_path = dir.join(format!("{tag}-ca.crt"));
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let pairs = addrs
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec![ip.to_string()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            let (c, k) = (
                dir.join(format!("{tag}-node{i}.crt")),
                dir.join(format!("{tag}-node{i}.key")),
            );
            std::fs::write(&c, cert.pem()).unwrap();
            std::fs::write(&k, key.serialize_pem()).unwrap();
            (c, k)
        })
        .collect();
    (ca_path, pairs)
}

/// As the DaemonSet runs it before its Secret exists: `--flows-listen` with
/// `--flows-tls-optional` and no certificate at the path given. weftd
/// starts (its socket answers) and logs that flows over TLS are off.
fn starts_without_its_certificate(lab: &mut Lab, missing: &Path) {
    let base = lab.weftd_args.clone();
    let n = lab.nodes()[0].clone();
    lab.weftd_args.extend([
        format!(
            "--flows-listen={}",
            SocketAddr::new(n.underlay_v4, FLOWS_PORT)
        ),
        format!("--flows-tls-cert={}", missing.join("tls.crt").display()),
        format!("--flows-tls-key={}", missing.join("tls.key").display()),
        "--flows-tls-optional".into(),
    ]);
    lab.stop_weftd_on(0).expect("stop weftd");
    let started = lab.start_weftd_on(0);
    let log = std::fs::read_to_string(n.log_path()).unwrap_or_default();
    started.unwrap_or_else(|e| panic!("weftd without its optional certificate: {e:#}\n{log}"));
    assert!(
        log.contains("flows over TLS are off"),
        "weftd does not say flows over TLS are off:\n{log}"
    );
    lab.weftd_args = base;
}

/// Restarts every node's weftd with `--flows-listen` on its underlay
/// address and its own certificate; the lab's flags are as before after.
fn serve_flows_over_tls(lab: &mut Lab, certs: &[(PathBuf, PathBuf)]) {
    let base = lab.weftd_args.clone();
    for (i, n) in lab.nodes().iter().enumerate() {
        let (cert, key) = &certs[i];
        lab.weftd_args = base.clone();
        lab.weftd_args.extend([
            format!(
                "--flows-listen={}",
                SocketAddr::new(n.underlay_v4, FLOWS_PORT)
            ),
            format!("--flows-tls-cert={}", cert.display()),
            format!("--flows-tls-key={}", key.display()),
        ]);
        lab.stop_weftd_on(i).expect("stop weftd");
        if let Err(e) = lab.start_weftd_on(i) {
            let log = std::fs::read_to_string(n.log_path()).unwrap_or_default();
            panic!("weftd of {} with --flows-listen: {e:#}\n{log}", n.name);
        }
    }
    lab.weftd_args = base;
    lab.save().unwrap();
}

/// A ServiceAccount `default/<name>` (bound to weft-flow-reader when
/// `reader`) and a token of it in `dir/<name>.token`.
fn account(lab: &Lab, dir: &Path, name: &str, reader: bool) -> PathBuf {
    kubectl(
        lab,
        &["-n", "default", "create", "serviceaccount", name],
        None,
    );
    if reader {
        kubectl(
            lab,
            &[
                "create",
                "clusterrolebinding",
                &format!("{name}-flows"),
                "--clusterrole=weft-flow-reader",
                &format!("--serviceaccount=default:{name}"),
            ],
            None,
        );
    }
    let token = kubectl(
        lab,
        &["-n", "default", "create", "token", name, "--duration=1h"],
        None,
    );
    let path = dir.join(format!("{name}.token"));
    std::fs::write(&path, token.trim()).unwrap();
    path
}

/// `weft observe --cluster` in node `node`'s namespace, with the lab's
/// admin kubeconfig (to list the Nodes) and the token in `token`.
fn observe(lab: &Lab, node: usize, ca: &Path, token: &Path, args: &[&str]) -> Command {
    let kube = lab.kube().expect("a kubernetes lab");
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", lab.nodes()[node].netns.display()))
        .arg(bin_dir().join("weft"))
        .args(["observe", "--cluster", "--ca"])
        .arg(ca)
        .arg("--kubeconfig")
        .arg(&kube.admin_kubeconfig)
        .arg("--token-file")
        .arg(token)
        .args(args);
    c
}

fn run(mut c: Command) -> (Output, String) {
    let out = c.output().expect("weft observe runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, err)
}

#[test]
fn cluster_observe_over_tls_sees_a_drop_on_another_node_and_refuses_the_unauthorised_privileged() {
    if !root_or_skip(
        "cluster_observe_over_tls_sees_a_drop_on_another_node_and_refuses_the_unauthorised_privileged",
    ) {
        return;
    }
    let started = Instant::now();
    let mut lab = common::kube::kube_lab("otl", PATIENCE, |s| {
        s.nodes = 2;
        s.etcd_members = 1;
    });
    let tmp = TempDir(std::env::temp_dir().join(format!("{}-tls", lab.name)));
    std::fs::create_dir_all(&tmp.0).unwrap();
    let addrs: Vec<IpAddr> = lab.nodes().iter().map(|n| n.underlay_v4).collect();
    let (ca, certs) = make_ca(&tmp.0, "cluster", &addrs);
    let (other_ca, _) = make_ca(&tmp.0, "other", &[]);
    starts_without_its_certificate(&mut lab, &tmp.0.join("no-secret"));
    serve_flows_over_tls(&mut lab, &certs);
    let reader = account(&lab, &tmp.0, "flow-reader", true);
    let stranger = account(&lab, &tmp.0, "stranger", false);

    let k = LabDriver::new(&lab, PATIENCE);
    apply(
        &lab,
        &json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "x-only", "namespace": "x"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {}}]}]}}),
    );
    k.wait_compiled(&["x/x-only".into()]);
    // the drop is made where x/a runs; the CLI runs on the other node
    let b_name = kubectl(
        &lab,
        &[
            "-n",
            "x",
            "get",
            "pod",
            "a",
            "-o",
            "jsonpath={.spec.nodeName}",
        ],
        None,
    );
    let nodes = lab.nodes();
    let b = nodes
        .iter()
        .position(|n| n.name == b_name.trim())
        .unwrap_or_else(|| panic!("x/a runs on {b_name:?}, not a lab node"));
    let a = 1 - b;
    eprintln!("x/a on {}, observing from {}", nodes[b].name, nodes[a].name);

    let mut follower = observe(
        &lab,
        a,
        &ca,
        &reader,
        &[
            "-f",
            "-o",
            "json",
            "--verdict",
            "DROPPED",
            "--to-pod",
            "x/a",
        ],
    );
    let mut follower = Kid(follower
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weft observe --cluster -f"));
    let stdout = follower.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let lines = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let f: Flow = serde_json::from_str(&line).expect("observe -o json prints flows");
            if tx.send((Instant::now(), f)).is_err() {
                break;
            }
        }
    });
    // both nodes' streams are open before the drop (a TLS handshake and
    // two reviews each)
    std::thread::sleep(Duration::from_millis(1500));
    let (ya, xa) = (k.pods["y/a"].clone(), k.pods["x/a"].0);
    let sent = Instant::now();
    let probe = std::thread::spawn(move || {
        weft_lab::probe::probe(
            &ya.1,
            SocketAddr::new(xa, 80),
            Transport::Tcp,
            Duration::from_secs(2),
            Some("hostname"),
        )
    });
    let got = rx.recv_timeout(Duration::from_secs(5));
    let outcome = probe.join().unwrap().expect("probe runs");
    let (seen, flow) = got.unwrap_or_else(|_| {
        let _ = follower.0.kill();
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut follower.0.stderr.take().unwrap(), &mut err);
        panic!("weft observe --cluster printed no drop of y/a -> x/a (probe: {outcome:?}); it said:\n{err}")
    });
    let latency = seen - sent;
    eprintln!(
        "weft observe --cluster printed the drop {latency:?} after the probe began: {}",
        serde_json::to_string(&flow).unwrap()
    );
    assert!(
        !matches!(outcome, weft_lab::probe::Outcome::Connected { .. }),
        "y/a reached x/a through x-only"
    );
    assert!(latency < Duration::from_secs(1), "seen after {latency:?}");
    assert_eq!(flow.verdict, Verdict::Dropped, "{flow:?}");
    assert_eq!(flow.node, nodes[b].name, "the drop is node B's: {flow:?}");
    assert_ne!(flow.node, nodes[a].name);
    assert_eq!(flow.source.ip, Some(k.pods["y/a"].0));
    assert_eq!(
        (
            flow.destination.namespace.as_deref(),
            flow.destination.pod.as_deref()
        ),
        (Some("x"), Some("a"))
    );
    let p = flow.policy.as_ref().expect("the drop names its policy");
    assert_eq!((p.namespace.as_str(), p.name.as_str()), ("x", "x-only"));
    drop(follower);
    lines.join().unwrap();

    // the same query without -f: every node answered, the drop is there
    let (out, err) = run(observe(
        &lab,
        a,
        &ca,
        &reader,
        &["-o", "json", "--verdict", "DROPPED", "--last", "50"],
    ));
    assert!(out.status.success(), "weft observe --cluster: {err}");
    let flows: Vec<Flow> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json flows"))
        .collect();
    assert!(
        flows
            .iter()
            .any(|f| f.node == nodes[b].name && f.destination.ip == Some(xa)),
        "{flows:#?}"
    );

    // a token RBAC does not let read flows: the SubjectAccessReview says no
    let (out, err) = run(observe(&lab, a, &ca, &stranger, &["--last", "5"]));
    eprintln!("without the ClusterRole:\n{err}");
    assert!(!out.status.success(), "a stranger read flows: {err}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for want in [
        "403",
        "system:serviceaccount:default:stranger may not read flows",
        "weft-flow-reader",
    ] {
        assert!(err.contains(want), "{want:?} in:\n{err}");
    }

    // a CA that did not sign the weftds' certificates: refused before any
    // token is sent, saying to pass the cluster's CA
    let (out, err) = run(observe(&lab, a, &other_ca, &reader, &["--last", "5"]));
    eprintln!("with another CA:\n{err}");
    assert!(!out.status.success(), "read flows past a wrong CA: {err}");
    assert!(out.stdout.is_empty());
    for want in ["--ca", "the cluster's CA"] {
        assert!(err.contains(want), "{want:?} in:\n{err}");
    }
    eprintln!(
        "cluster observe checked in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
