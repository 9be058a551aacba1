//! weftd as a Kubernetes node agent in a lab cluster, and deploy/kubernetes
//! against the lab's real API server. weftd runs with the token of the
//! ServiceAccount that deploy/kubernetes binds (made with the TokenRequest
//! API, `kubectl create token`), never as admin: a rule missing from the
//! ClusterRole fails this test. One lab for the binary (a control plane
//! takes tens of seconds to start); the checks run in sequence, each
//! saying what it checks. Traffic goes only to addresses of this lab.

mod common;
mod kube_agent_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use kube_agent_support::{probe, rss_kib, GhostNetns, Relay};
use serde_json::{json, Value};
use weft_api::{paths, AgentStatus, EndpointView};
use weft_lab::kube::KubeSpec;
use weft_lab::{Lab, LabSpec};

const PATIENCE: Duration = Duration::from_secs(180);
const NS: &str = "ka";
/// Where weftd answers probes in its node (the DaemonSet's address).
const HEALTH: &str = "127.0.0.1:9765";
/// The relay weftd reaches the API server through, in its node.
const RELAY: &str = "127.0.0.1:16443";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn kubectl_out(
    lab: &Lab,
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> (bool, String) {
    let o = lab
        .kubectl_as(kubeconfig, args, stdin)
        .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn admin(lab: &Lab, args: &[&str]) -> String {
    let kc = lab.kube().unwrap().admin_kubeconfig.clone();
    let (ok, text) = kubectl_out(lab, &kc, args, None);
    assert!(ok, "kubectl {}: {text}", args.join(" "));
    text
}

fn admin_apply(lab: &Lab, manifest: &Value) {
    let kc = lab.kube().unwrap().admin_kubeconfig.clone();
    let (ok, text) = kubectl_out(
        lab,
        &kc,
        &["apply", "-f", "-"],
        Some(manifest.to_string().as_bytes()),
    );
    assert!(ok, "apply: {text}");
}

fn status(lab: &Lab) -> AgentStatus {
    api_get_at(&lab.nodes()[0].socket, paths::STATUS)
}

fn views(lab: &Lab) -> Vec<EndpointView> {
    api_get_at(&lab.nodes()[0].socket, paths::ENDPOINTS)
}

fn k8s_ready(lab: &Lab) -> bool {
    status(lab).kubernetes.is_some_and(|k| k.ready)
}

/// [`common::within`], every 5 ms: the waits here are the latencies measured.
fn within<T>(limit: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    within_every(Duration::from_millis(5), limit, what, f)
}

/// The label `key` of pod `name` as weftd shows it.
fn label_of(lab: &Lab, name: &str, key: &str) -> Option<String> {
    views(lab)
        .into_iter()
        .find(|v| v.endpoint.pod.namespace == NS && v.endpoint.pod.name == name)
        .and_then(|v| v.kubernetes)
        .and_then(|k| k.labels.get(key).cloned())
}

fn ns_label_of(lab: &Lab, name: &str, key: &str) -> Option<String> {
    views(lab)
        .into_iter()
        .find(|v| v.endpoint.pod.namespace == NS && v.endpoint.pod.name == name)
        .and_then(|v| v.kubernetes)
        .and_then(|k| k.namespace_labels)
        .and_then(|l| l.get(key).cloned())
}

fn running_pods(lab: &Lab) -> Vec<(String, String, String)> {
    let v: Value =
        serde_json::from_str(&admin(lab, &["-n", NS, "get", "pods", "-o", "json"])).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["status"]["podIP"].is_string() && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["metadata"]["uid"].as_str().unwrap().to_string(),
                p["status"]["podIP"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Restarts node 1's weftd; `extra` replaces its Kubernetes flags (an
/// empty `extra` keeps them).
fn restart_weftd(lab: &mut Lab, extra: &[String]) {
    lab.stop_weftd_on(0).expect("stop weftd");
    if !extra.is_empty() {
        let mut kept = Vec::new();
        let mut args = lab.weftd_args.drain(..);
        while let Some(a) = args.next() {
            if a == "--kubeconfig" || a == "--kubernetes" {
                args.next();
            } else {
                kept.push(a);
            }
        }
        drop(args);
        lab.weftd_args = kept;
    }
    lab.weftd_args.extend(extra.iter().cloned());
    lab.start_weftd_on(0).expect("start weftd");
}

fn median(v: &mut [u128]) -> u128 {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn weftd_watches_kubernetes_with_its_service_account_privileged() {
    if !root_or_skip("weftd_watches_kubernetes_with_its_service_account_privileged") {
        return;
    }
    let mut spec = LabSpec::new(&lab_name("ka"), &bin_dir());
    spec.kubernetes = Some(KubeSpec {
        ready_timeout: PATIENCE,
        ..KubeSpec::default()
    });
    let lab = Lab::up(&spec, &mut |l| eprintln!("{l}")).expect("lab up --kubernetes");
    let mut lab = LabGuard(lab);
    let node_netns = lab.nodes()[0].netns.clone();
    let admin_kc = lab.kube().unwrap().admin_kubeconfig.clone();
    // the lab runs every weftd with the ServiceAccount's token already
    within(
        Duration::from_secs(30),
        "the lab's weftd watches the API",
        || k8s_ready(&lab).then_some(()),
    );
    // weftd's memory without the adapter, for comparison
    restart_weftd(&mut lab, &["--kubernetes".into(), "off".into()]);
    assert!(status(&lab).kubernetes.is_none());
    std::thread::sleep(Duration::from_secs(2));
    let rss_without = rss_kib(lab.nodes()[0].weftd_pid.unwrap());

    // -- deploy/kubernetes against the real API server: every manifest, and
    // the kustomization, pass a server-side dry run (the namespace must
    // exist for the namespaced ones)
    admin(
        &lab,
        &[
            "apply",
            "-f",
            deploy_dir().join("namespace.yaml").to_str().unwrap(),
        ],
    );
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "yaml") && !p.ends_with("kustomization.yaml")
        })
        .collect();
    manifests.sort();
    assert_eq!(manifests.len(), 7, "{manifests:?}");
    for m in &manifests {
        let out = admin(
            &lab,
            &["apply", "--dry-run=server", "-f", m.to_str().unwrap()],
        );
        assert!(out.contains("(server dry run)"), "{}: {out}", m.display());
    }
    let out = admin(
        &lab,
        &[
            "apply",
            "--dry-run=server",
            "-k",
            deploy_dir().to_str().unwrap(),
        ],
    );
    assert!(
        out.contains("daemonset.apps/weft") && out.contains("(server dry run)"),
        "{out}"
    );

    // -- the RBAC for real, and a token of the ServiceAccount
    for f in [
        "serviceaccount.yaml",
        "clusterrole.yaml",
        "clusterrolebinding.yaml",
    ] {
        admin(
            &lab,
            &["apply", "-f", deploy_dir().join(f).to_str().unwrap()],
        );
    }
    let token = admin(
        &lab,
        &[
            "-n",
            "weft-system",
            "create",
            "token",
            "weft",
            "--duration=2h",
        ],
    );
    let token_kc = lab.write_token_kubeconfig("weftd", token.trim()).unwrap();
    // least privilege: reads what weftd watches, and patches Nodes (its
    // own annotations, the node registry of --store kubernetes), nothing else
    for (verb, what, want) in [
        ("watch", "pods", "yes"),
        ("get", "pods", "yes"),
        ("list", "endpointslices.discovery.k8s.io", "yes"),
        ("watch", "networkpolicies.networking.k8s.io", "yes"),
        ("create", "pods", "no"),
        ("patch", "nodes", "yes"),
        ("update", "nodes", "no"),
        ("delete", "nodes", "no"),
        ("create", "nodes", "no"),
        ("patch", "pods", "no"),
        ("get", "secrets", "no"),
        ("list", "configmaps", "no"),
    ] {
        let (_, out) = kubectl_out(&lab, &token_kc, &["auth", "can-i", verb, what, "-A"], None);
        assert_eq!(
            out.lines().next().unwrap_or(""),
            want,
            "can-i {verb} {what}: {out}"
        );
    }
    // weftd reaches the API through a relay in its node (stopping the relay
    // is the API server going away, for weftd alone)
    let kc_text = std::fs::read_to_string(&token_kc).unwrap();
    let server = lab.kube().unwrap().server.clone();
    assert!(kc_text.contains(&server));
    let relay_kc = token_kc.with_file_name("weftd-relay.kubeconfig");
    std::fs::write(
        &relay_kc,
        kc_text.replace(&server, &format!("https://{RELAY}")),
    )
    .unwrap();
    let upstream: SocketAddr = server.trim_start_matches("https://").parse().unwrap();
    let mut relay = Relay::new(node_netns.clone(), RELAY.parse().unwrap(), upstream);
    relay.start();

    restart_weftd(
        &mut lab,
        &[
            "--kubeconfig".into(),
            relay_kc.display().to_string(),
            "--pod-gone-grace-seconds".into(),
            "3".into(),
            "--health-listen".into(),
            HEALTH.into(),
        ],
    );
    let synced = Instant::now();
    within(
        Duration::from_secs(60),
        "weftd lists every kind with its token",
        || k8s_ready(&lab).then_some(()),
    );
    eprintln!(
        "weftd synced with the API server {:?} after its start",
        synced.elapsed()
    );
    let k = status(&lab).kubernetes.unwrap();
    assert_eq!(k.watches.len(), 7, "the six kinds and ClusterNetworkPolicy");
    for w in &k.watches {
        assert!(w.synced && w.healthy && w.last_error.is_none(), "{w:?}");
    }
    let health: SocketAddr = HEALTH.parse().unwrap();
    assert_eq!(probe(&node_netns, health, "/healthz"), Some(200));
    assert_eq!(probe(&node_netns, health, "/readyz"), Some(200));
    std::thread::sleep(Duration::from_secs(2));
    let rss_with = rss_kib(lab.nodes()[0].weftd_pid.unwrap());
    eprintln!("weftd RSS: {rss_without} KiB without the adapter, {rss_with} KiB with its six watches synced");

    // -- pods from a Deployment: each endpoint knows its pod, labels and
    // namespace labels
    admin_apply(
        &lab,
        &json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": NS, "labels": {"team": "a"}}}),
    );
    admin_apply(
        &lab,
        &json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "web", "image": "agnhost",
                        "ports": [{"name": "http", "containerPort": 8080}]}]}}}
        }),
    );
    let pods = within(PATIENCE, "two web pods running", || {
        let p = running_pods(&lab);
        (p.len() == 2).then_some(p)
    });
    within(
        Duration::from_secs(10),
        "weftd shows both pods with their labels",
        || {
            let v = views(&lab);
            pods.iter()
                .all(|(name, uid, _)| {
                    v.iter().any(|e| {
                        e.endpoint.pod.name == *name
                            && e.endpoint.pod.uid == *uid
                            && e.kubernetes.as_ref().is_some_and(|k| {
                                k.uid == *uid
                                    && k.labels.get("app").map(String::as_str) == Some("web")
                                    && k.namespace_labels
                                        .as_ref()
                                        .and_then(|l| l.get("team"))
                                        .map(String::as_str)
                                        == Some("a")
                            })
                    })
                })
                .then_some(())
        },
    );
    let (pod, _, pod_ip) = pods[0].clone();

    // -- label changes reach weftd within a second (measured from kubectl's
    // return, when the API has the change; and from its start)
    let (mut after_return, mut after_start) = (Vec::new(), Vec::new());
    for i in 0..10 {
        let value = format!("v{i}");
        let t0 = Instant::now();
        admin(
            &lab,
            &[
                "-n",
                NS,
                "label",
                "pod",
                &pod,
                &format!("rev={value}"),
                "--overwrite",
            ],
        );
        let t1 = Instant::now();
        within(Duration::from_secs(5), "the label reaches weftd", || {
            (label_of(&lab, &pod, "rev").as_deref() == Some(value.as_str())).then_some(())
        });
        after_return.push(t1.elapsed().as_millis());
        after_start.push(t0.elapsed().as_millis());
    }
    let worst = *after_return.iter().max().unwrap();
    eprintln!(
        "label change -> weftd: median {} ms / max {worst} ms after kubectl returned; median {} ms / max {} ms after kubectl started",
        median(&mut after_return.clone()),
        median(&mut after_start.clone()),
        after_start.iter().max().unwrap()
    );
    assert!(
        worst < 1000,
        "a label change took {worst} ms to reach weftd"
    );
    let t1 = Instant::now();
    admin(&lab, &["label", "namespace", NS, "team=b", "--overwrite"]);
    within(
        Duration::from_secs(1),
        "a namespace label reaches weftd within a second",
        || (ns_label_of(&lab, &pod, "team").as_deref() == Some("b")).then_some(()),
    );
    eprintln!(
        "namespace label -> weftd: {} ms after kubectl returned",
        t1.elapsed().as_millis()
    );

    // -- the API server goes away for weftd and restarts; labels change
    // meanwhile; CNI is served and pods keep their network; weftd catches up
    relay.stop();
    within(
        Duration::from_secs(30),
        "weftd notices the API server is away",
        || (!k8s_ready(&lab)).then_some(()),
    );
    assert_eq!(probe(&node_netns, health, "/readyz"), Some(503));
    assert_eq!(
        probe(&node_netns, health, "/healthz"),
        Some(200),
        "an away API server is no reason to restart weftd"
    );
    // weftd started while the API is away: it serves CNI at once (the lab
    // waits for its socket) and says it waits for the API server
    let log_path = lab.nodes()[0].log_path();
    let waiting = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .matches("waiting for the Kubernetes API server")
            .count()
    };
    let before = waiting(&log_path);
    restart_weftd(&mut lab, &[]);
    within(
        Duration::from_secs(10),
        "weftd says it waits for the API server",
        || (waiting(&log_path) > before).then_some(()),
    );
    assert!(!k8s_ready(&lab));
    admin(&lab, &["-n", NS, "label", "pod", &pod, "away=yes"]);
    // a new pod while weftd cannot see the API: attached all the same
    admin(
        &lab,
        &["-n", NS, "scale", "deployment", "web", "--replicas=3"],
    );
    let three = within(
        PATIENCE,
        "a third pod running while weftd cannot see the API",
        || {
            let p = running_pods(&lab);
            (p.len() == 3).then_some(p)
        },
    );
    // the API server itself restarts too (weftd's watches resume against a
    // fresh watch cache) and a namespace label changes after it
    lab.stop_apiserver().expect("stop the API server");
    lab.start_apiserver(PATIENCE).expect("start the API server");
    admin(&lab, &["label", "namespace", NS, "team=c", "--overwrite"]);
    let reach = |ip: &str| {
        let addr: SocketAddr = format!("{ip}:8080").parse().unwrap();
        weft_datapath::netns::run_in(&node_netns, move || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
        })
        .unwrap_or(false)
    };
    assert!(
        reach(&pod_ip),
        "a pod keeps its network while the API is away"
    );
    let (new_pod, _, new_ip) = three
        .iter()
        .find(|p| !pods.iter().any(|q| q.0 == p.0))
        .unwrap()
        .clone();
    assert!(
        reach(&new_ip),
        "the pod added while the API was away has its network"
    );
    assert!(
        label_of(&lab, &new_pod, "app").is_none(),
        "weftd has not seen the new pod's labels yet"
    );
    let back = Instant::now();
    relay.start();
    within(
        Duration::from_secs(15),
        "weftd catches up after the API server returns",
        || {
            (label_of(&lab, &pod, "away").as_deref() == Some("yes")
                && ns_label_of(&lab, &pod, "team").as_deref() == Some("c")
                && label_of(&lab, &new_pod, "app").as_deref() == Some("web")
                && k8s_ready(&lab))
            .then_some(())
        },
    );
    eprintln!(
        "weftd caught up {} ms after the API server became reachable again",
        back.elapsed().as_millis()
    );
    assert_eq!(probe(&node_netns, health, "/readyz"), Some(200));

    // -- a pod whose DEL never came: a CNI ADD as a kubelet makes it, for a
    // pod the API does not have (ka/ghost), is cleaned up after the grace
    // period, as CNI GC would; the Deployment's pods, and a lab pod that no
    // kubelet made (no UID), are not touched
    let ghost = GhostNetns::new(&format!("{}-ghost", lab.name));
    let out = weft_lab::cni_exec(
        &lab.cni_plugin(),
        &lab.bin_dir,
        &node_netns,
        "ADD",
        "ghost-sandbox",
        &ghost.path(),
        "eth0",
        &format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={NS};K8S_POD_NAME=ghost;K8S_POD_UID=0000-ghost"
        ),
        &serde_json::to_vec(&lab.net_conf_on(0, "1.0.0")).unwrap(),
    )
    .expect("weft-cni runs");
    assert!(out.success, "{} {}", out.stdout, out.stderr);
    lab.add_pod("lab-pod").expect("a lab pod");
    assert!(views(&lab).iter().any(|v| v.endpoint.pod.name == "ghost"));
    within(
        Duration::from_secs(30),
        "weftd cleans up after the gone pod",
        || (!views(&lab).iter().any(|v| v.endpoint.pod.name == "ghost")).then_some(()),
    );
    std::thread::sleep(Duration::from_secs(4));
    let st = status(&lab);
    assert_eq!(st.kubernetes.as_ref().unwrap().pods_collected, 1);
    assert_eq!(
        views(&lab)
            .iter()
            .filter(|v| v.endpoint.pod.namespace == NS)
            .count(),
        3
    );
    assert!(
        views(&lab).iter().any(|v| v.endpoint.pod.name == "lab-pod"),
        "a pod no kubelet made is left alone"
    );
    assert_ipam_clean(&lab, 0);
    drop(ghost);

    // -- a rule missing from the ClusterRole: weftd cannot list that kind,
    // says so and is not ready; with the rule back it recovers by itself
    let role = std::fs::read_to_string(deploy_dir().join("clusterrole.yaml")).unwrap();
    let without_policies = role.replace("\"networkpolicies\"", "\"networkpolicies-not-granted\"");
    assert_ne!(role, without_policies);
    let (ok, out) = kubectl_out(
        &lab,
        &admin_kc,
        &["apply", "-f", "-"],
        Some(without_policies.as_bytes()),
    );
    assert!(ok, "{out}");
    restart_weftd(&mut lab, &[]);
    let forbidden = within(
        Duration::from_secs(30),
        "weftd reports the missing rule",
        || {
            let k = status(&lab).kubernetes?;
            k.watches.into_iter().find(|w| {
                w.kind == "networkpolicies"
                    && w.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("forbidden"))
            })
        },
    );
    eprintln!("with the rule missing: {forbidden:?}");
    assert!(!k8s_ready(&lab));
    assert_eq!(probe(&node_netns, health, "/readyz"), Some(503));
    admin(
        &lab,
        &[
            "apply",
            "-f",
            deploy_dir().join("clusterrole.yaml").to_str().unwrap(),
        ],
    );
    within(
        Duration::from_secs(30),
        "weftd recovers once the rule is back",
        || k8s_ready(&lab).then_some(()),
    );
    let rss_end = rss_kib(lab.nodes()[0].weftd_pid.unwrap());
    eprintln!("weftd RSS with 3 pods and the adapter: {rss_end} KiB");
    relay.stop();
}
