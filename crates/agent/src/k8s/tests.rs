use std::collections::HashSet;

use weft_api::{Attachment, EndpointInfo, PodRef};
use weft_k8s::{Index, NamespaceInfo, PodInfo};

use super::*;
use crate::endpoint::Endpoint;

fn ep(cid: &str, ns: &str, name: &str, uid: &str, created_at: u64) -> Endpoint {
    Endpoint {
        attachment: Attachment {
            container_id: cid.into(),
            ifname: "eth0".into(),
        },
        pod: PodRef {
            namespace: ns.into(),
            name: name.into(),
            uid: uid.into(),
        },
        network: "weft".into(),
        netns: format!("/run/netns/{cid}"),
        host_ifname: format!("weft{cid}"),
        mac: [2, 0, 0, 0, 0, 1],
        mtu: 1500,
        ips: vec![],
        created_at,
    }
}

fn pod(ns: &str, name: &str, uid: &str, labels: &[(&str, &str)]) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        uid: uid.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ips: vec![],
        named_ports: vec![],
        host_network: false,
        node: "node-a".into(),
        phase: "Running".into(),
        terminating: false,
    }
}

#[test]
fn endpoints_carry_their_pods_labels_live() {
    let idx = Index::new("https://api");
    let view = idx.view();
    let eps = || {
        vec![
            ep("c1", "shop", "web-1", "u1", 0),
            ep("c2", "shop", "web-2", "", 0),
            ep("c3", "", "podman-ctr", "", 0),
            ep("c4", "shop", "recreated", "old-uid", 0),
        ]
    };
    // no adapter: no metadata
    assert!(annotate(eps(), None).iter().all(|v| v.kubernetes.is_none()));

    idx.apply(pod("shop", "web-1", "u1", &[("app", "web")]));
    idx.apply(pod("shop", "web-2", "u2", &[("app", "web")]));
    idx.apply(pod("shop", "recreated", "new-uid", &[("app", "db")]));
    let got = annotate(eps(), Some(&view));
    let m = got[0].kubernetes.clone().unwrap();
    assert_eq!(m.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(
        m.namespace_labels, None,
        "a namespace not seen yet has no labels, the pod is there all the same"
    );
    // the UID comes from the API when the runtime did not pass it
    assert_eq!(got[1].endpoint.pod.uid, "u2");
    assert!(got[2].kubernetes.is_none());
    assert!(
        got[3].kubernetes.is_none(),
        "another pod of the same name is not this endpoint's pod"
    );

    idx.apply(NamespaceInfo {
        name: "shop".into(),
        labels: [("team".to_string(), "a".to_string())].into(),
        audit: false,
    });
    idx.apply(pod("shop", "web-1", "u1", &[("app", "web"), ("v", "2")]));
    let m = annotate(eps(), Some(&view))[0].kubernetes.clone().unwrap();
    assert_eq!(m.labels.get("v").map(String::as_str), Some("2"));
    assert_eq!(
        m.namespace_labels.unwrap().get("team").map(String::as_str),
        Some("a")
    );
}

#[test]
fn an_endpoint_view_reads_as_an_endpoint_info() {
    // older clients read `weft endpoints` JSON as EndpointInfo
    let v = annotate(vec![ep("c1", "shop", "web-1", "u1", 7)], None).remove(0);
    let json = serde_json::to_string(&v).unwrap();
    let back: EndpointInfo = serde_json::from_str(&json).unwrap();
    assert_eq!(back, v.endpoint);
}

#[test]
fn gone_pods_are_collected_only_after_the_grace_period() {
    let grace = Duration::from_secs(30);
    let t0 = Instant::now();
    let api: HashSet<(&str, &str, &str)> =
        [("shop", "web-1", "u1"), ("shop", "recreated", "new")].into();
    let lookup = |ns: &str, name: &str| {
        api.iter()
            .find(|(n, p, _)| *n == ns && *p == name)
            .map(|(_, _, u)| u.to_string())
    };
    let eps = vec![
        ep("live", "shop", "web-1", "u1", 0),
        ep("gone", "shop", "web-9", "u9", 0),
        ep("old-incarnation", "shop", "recreated", "old", 0),
        ep("no-uid", "shop", "recreated", "", 0),
        ep("lab-pod", "default", "not-in-the-api", "", 0),
        ep("podman", "", "ctr", "", 0),
        ep("young", "shop", "just-added", "uy", 1_000),
    ];
    let mut t = GoneTracker::default();
    let names = |v: Vec<Endpoint>| -> Vec<String> {
        v.into_iter().map(|e| e.attachment.container_id).collect()
    };
    assert!(
        t.candidates(&eps, lookup, t0, 1_000, grace).is_empty(),
        "first seen missing now"
    );
    assert!(t
        .candidates(&eps, lookup, t0 + Duration::from_secs(29), 1_029, grace)
        .is_empty());
    assert_eq!(
        names(t.candidates(&eps, lookup, t0 + grace, 1_030, grace)),
        ["gone", "old-incarnation", "young"]
    );
    // an endpoint younger than the grace period is never collected
    assert_eq!(
        names(t.candidates(&eps, lookup, t0 + grace, 1_010, grace)),
        ["gone", "old-incarnation"]
    );
    // the watch went stale: every absence starts over
    t.forget();
    assert!(t
        .candidates(&eps, lookup, t0 + grace * 2, 2_000, grace)
        .is_empty());
    // the API shows the pod after all: its clock starts over
    t.present(&eps[1].attachment);
    let later = t.candidates(&eps, lookup, t0 + grace * 3, 3_000, grace);
    assert_eq!(names(later), ["old-incarnation", "young"]);
}

#[test]
fn source_follows_the_mode_and_flags() {
    use clap::Parser;
    let cfg = |args: &[&str]| {
        let mut v = vec!["weftd"];
        v.extend_from_slice(args);
        AgentConfig::parse_from(v)
    };
    // these tests do not run in a pod; KUBERNETES_SERVICE_HOST alone is not one
    if std::path::Path::new(SERVICE_ACCOUNT_TOKEN).exists() {
        eprintln!("skipping: this test runs inside a Kubernetes pod");
        return;
    }
    assert_eq!(source(&cfg(&[])), None);
    assert_eq!(
        source(&cfg(&["--kubernetes", "off", "--kubeconfig", "/k"])),
        None
    );
    assert_eq!(
        source(&cfg(&["--kubeconfig", "/k"])),
        Some(Source::Kubeconfig("/k".into()))
    );
    assert_eq!(source(&cfg(&["--kubernetes", "on"])), Some(Source::Infer));
}
