//! Pods of the lab cluster, end to end: the real control plane schedules
//! them, the lab kubelet on each node attaches them through weft-cni as
//! containerd's CRI would, serves their ports, and writes their status.
//! One 3-node lab for the whole binary (a control plane takes tens of
//! seconds to start on a shared 2-CPU machine): the checks run in sequence
//! inside one test, each saying what it checks. Every probe goes from a
//! namespace of this lab to an address inside it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::kube::apply;
use common::*;
use serde_json::Value;
use weft_lab::Lab;

/// How long the control plane may take on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(180);
/// How long a pod may take from creation to Ready.
const POD_WAIT: Duration = Duration::from_secs(60);
const NS: &str = "kp";

fn kubectl(lab: &Lab, args: &[&str]) -> String {
    kube::kubectl(lab, args, None)
}

fn get_json(lab: &Lab, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(lab, &a)).expect("kubectl prints JSON")
}

/// [`common::within`], every 200 ms (each poll here is a kubectl run).
fn within<T>(limit: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    within_every(Duration::from_millis(200), limit, what, f)
}

fn condition(obj: &Value, kind: &str) -> Option<String> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

fn ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running" && condition(pod, "Ready").as_deref() == Some("True")
}

/// `weft lab <args>`, through the CLI people use; returns (exit code, stdout, stderr).
fn weft_lab(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(bin_dir().join("weft"))
        .arg("lab")
        .args(args)
        .output()
        .expect("weft runs");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).trim().to_string(),
        String::from_utf8_lossy(&o.stderr).trim().to_string(),
    )
}

/// Probes `to` from `from` with `--send line --print-reply`: the reply, or
/// None with the CLI's reason.
fn ask(
    lab: &Lab,
    from: &str,
    to: &str,
    port: u16,
    proto: &str,
    line: &str,
) -> Result<String, String> {
    let port = port.to_string();
    let (code, out, err) = weft_lab(&[
        "probe",
        "--name",
        &lab.name,
        "--from",
        from,
        "--to",
        to,
        "--port",
        &port,
        "--protocol",
        proto,
        "--timeout-ms",
        "2000",
        "--send",
        line,
        "--print-reply",
    ]);
    if code == 0 {
        Ok(out)
    } else {
        Err(err)
    }
}

fn pods(lab: &Lab, selector: &str) -> Vec<Value> {
    get_json(lab, &["pods", "-n", NS, "-l", selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn name(pod: &Value) -> String {
    pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn pod_json(name: &str, extra_spec: Value) -> Value {
    let mut spec = serde_json::json!({
        "containers": [{"name": "app", "image": "weft.test/agnhost",
            "ports": [{"containerPort": 8080}, {"containerPort": 8081, "protocol": "UDP"}]}],
    });
    for (k, v) in extra_spec.as_object().cloned().unwrap_or_default() {
        spec[k] = v;
    }
    serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}}, "spec": spec})
}

fn pod_netns(lab: &Lab, pod: &str) -> PathBuf {
    weft_lab::kubelet::find_pod(lab, NS, pod)
        .expect("the kubelet recorded the pod")
        .1
        .netns
}

/// Every address weftd of any node holds for an endpoint.
fn weft_addresses(lab: &Lab) -> BTreeMap<String, (String, String)> {
    let mut all = BTreeMap::new();
    for n in lab.nodes() {
        let eps: Vec<weft_api::EndpointInfo> = api_get_at(&n.socket, weft_api::paths::ENDPOINTS);
        for e in eps {
            for ip in e.ips {
                all.insert(
                    ip.addr().to_string(),
                    (e.pod.namespace.clone(), e.pod.name.clone()),
                );
            }
        }
    }
    all
}

/// The namespaces whose names carry lab `name`'s prefix.
fn lab_netns(name: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&format!("{name}-")))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn lab_kubelet_runs_deployments_readiness_gates_grace_and_host_network_pods_privileged() {
    if !root_or_skip(
        "lab_kubelet_runs_deployments_readiness_gates_grace_and_host_network_pods_privileged",
    ) {
        return;
    }
    let mut lab = common::kube::kube_lab("kp", PATIENCE, |s| {
        s.nodes = 3;
        // one etcd the weftds share: pod addresses unique across the nodes
        s.etcd_members = 1;
    });
    let node_names: Vec<String> = lab.nodes().into_iter().map(|n| n.name).collect();

    // every node registered by its kubelet, Ready, with its underlay addresses
    within(PATIENCE, "3 nodes Ready", || {
        let nodes = get_json(&lab, &["nodes"]);
        let items = nodes["items"].as_array()?;
        (items.len() == 3
            && items
                .iter()
                .all(|n| condition(n, "Ready").as_deref() == Some("True")))
        .then_some(())
    });
    let mut renewed = Vec::new();
    for (i, n) in lab.nodes().iter().enumerate() {
        let node = get_json(&lab, &["node", &n.name]);
        let addrs: Vec<&str> = node["status"]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["type"] == "InternalIP")
            .filter_map(|a| a["address"].as_str())
            .collect();
        assert_eq!(
            addrs,
            vec![n.underlay_v4.to_string(), n.underlay_v6.to_string()],
            "node {i}"
        );
        let lease = get_json(&lab, &["lease", "-n", "kube-node-lease", &n.name]);
        assert_eq!(lease["spec"]["holderIdentity"], n.name.as_str());
        renewed.push(lease["spec"]["renewTime"].as_str().unwrap().to_string());
    }
    kubectl(&lab, &["create", "namespace", NS]);

    // a Deployment of 6 is spread by the scheduler; every pod Running and
    // Ready with an address weft gave it (weftd of its node holds it, for
    // that pod: the CRI's CNI_ARGS arrived)
    let t = Instant::now();
    apply(
        &lab,
        &serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    // short, so scaling down at the end does not wait 30 s
                    "spec": pod_json("x", serde_json::json!({"terminationGracePeriodSeconds": 1}))["spec"]}},
        }),
    );
    let web = within(POD_WAIT, "6 web pods Ready", || {
        let p = pods(&lab, "app=web");
        (p.len() == 6 && p.iter().all(ready)).then_some(p)
    });
    eprintln!(
        "6 replicas Ready {:.1} s after apply",
        t.elapsed().as_secs_f64()
    );
    let used: std::collections::BTreeSet<&str> = web
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    assert_eq!(
        used.len(),
        3,
        "the scheduler spreads 6 replicas over every node: {used:?}"
    );
    let held = weft_addresses(&lab);
    for p in &web {
        let ips: Vec<&str> = p["status"]["podIPs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["ip"].as_str())
            .collect();
        assert_eq!(ips.len(), 2, "dual-stack pod addresses: {ips:?}");
        assert_eq!(p["status"]["podIP"], ips[0]);
        for ip in &ips {
            assert_eq!(
                held.get(*ip),
                Some(&(NS.to_string(), name(p))),
                "{ip} of {}",
                name(p)
            );
        }
        let node = lab
            .nodes()
            .into_iter()
            .find(|n| p["spec"]["nodeName"] == n.name.as_str())
            .expect("bound to a lab node");
        assert_eq!(p["status"]["hostIP"], node.underlay_v4.to_string());
    }

    // pods reach each other, across nodes, over TCP and UDP; the answer
    // names the backend (hostname) and the client (clientip)
    let names: Vec<String> = web.iter().map(name).collect();
    let first = format!("{NS}/{}", names[0]);
    for (i, p) in web.iter().enumerate() {
        let other = format!("{NS}/{}", names[i]);
        assert_eq!(
            ask(&lab, &first, &other, 8080, "tcp", "hostname"),
            Ok(names[i].clone())
        );
        assert_eq!(
            ask(&lab, &other, &first, 8081, "udp", "hostname"),
            Ok(names[0].clone())
        );
        let from_ip = p["status"]["podIP"].as_str().unwrap();
        let seen = ask(&lab, &other, &first, 8080, "tcp", "clientip").unwrap();
        assert!(
            seen.starts_with(&format!("{from_ip}:")),
            "clientip {seen} from {from_ip}"
        );
    }
    assert_eq!(
        ask(&lab, &first, &first, 8080, "tcp", "any line"),
        Ok("any line".into())
    );
    let (code, _, err) = weft_lab(&[
        "probe",
        "--name",
        &lab.name,
        "--from",
        &first,
        "--to",
        &format!("{NS}/{}", names[1]),
        "--port",
        "9",
        "--timeout-ms",
        "2000",
    ]);
    assert_eq!(code, 1, "nobody listens on 9");
    assert!(err.contains("refused"), "{err}");
    let (code, out, _) = weft_lab(&[
        "exec", "--name", &lab.name, &first, "--", "ip", "-br", "addr", "show", "eth0",
    ]);
    assert_eq!(code, 0);
    assert!(
        out.contains(web[0]["status"]["podIP"].as_str().unwrap()),
        "{out}"
    );

    // a readiness gate: Running but not Ready until its condition is True,
    // and not Ready again when a test sets it False
    let gate = "weft.test/ready";
    apply(
        &lab,
        &pod_json(
            "gated",
            serde_json::json!({"readinessGates": [{"conditionType": gate}]}),
        ),
    );
    within(POD_WAIT, "gated Running", || {
        let p = get_json(&lab, &["pod", "-n", NS, "gated"]);
        (p["status"]["phase"] == "Running"
            && condition(&p, "ContainersReady").as_deref() == Some("True"))
        .then_some(())
    });
    let p = get_json(&lab, &["pod", "-n", NS, "gated"]);
    assert_eq!(
        condition(&p, "Ready").as_deref(),
        Some("False"),
        "an unset gate holds Ready back"
    );
    for (set, want) in [("True", "True"), ("False", "False"), ("True", "True")] {
        let patch =
            format!(r#"{{"status":{{"conditions":[{{"type":"{gate}","status":"{set}"}}]}}}}"#);
        kubectl(
            &lab,
            &[
                "patch",
                "pod",
                "-n",
                NS,
                "gated",
                "--subresource=status",
                "--type=strategic",
                "-p",
                &patch,
            ],
        );
        within(
            Duration::from_secs(10),
            &format!("Ready {want} after the gate went {set}"),
            || {
                let p = get_json(&lab, &["pod", "-n", NS, "gated"]);
                (condition(&p, "Ready").as_deref() == Some(want)).then_some(())
            },
        );
    }

    // deletion: not Ready at once, still serving through the grace period,
    // then CNI DEL (weft releases the address), the namespace goes, and the
    // kubelet deletes the object
    apply(
        &lab,
        &pod_json(
            "drain",
            serde_json::json!({"terminationGracePeriodSeconds": 4}),
        ),
    );
    let p = within(POD_WAIT, "drain Ready", || {
        let p = get_json(&lab, &["pod", "-n", NS, "drain"]);
        ready(&p).then_some(p)
    });
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();
    let netns = pod_netns(&lab, "drain");
    assert!(weft_addresses(&lab).contains_key(&ip));
    let t = Instant::now();
    kubectl(&lab, &["delete", "pod", "-n", NS, "drain", "--wait=false"]);
    within(
        Duration::from_secs(3),
        "drain not Ready after delete",
        || {
            let p = get_json(&lab, &["pod", "-n", NS, "drain"]);
            (condition(&p, "Ready").as_deref() == Some("False")).then_some(())
        },
    );
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(
        ask(&lab, &first, &ip, 8080, "tcp", "hostname"),
        Ok("drain".into()),
        "serves while draining"
    );
    within(Duration::from_secs(15), "drain object gone", || {
        let o = lab.kubectl(&["get", "pod", "-n", NS, "drain"]).unwrap();
        (!o.status.success()).then_some(())
    });
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(4),
        "deleted after {took:?}, before its grace period"
    );
    assert!(!weft_addresses(&lab).contains_key(&ip), "DEL released {ip}");
    assert!(!netns.exists(), "{} removed", netns.display());
    assert!(ask(&lab, &first, &ip, 8080, "tcp", "hostname").is_err());

    // a hostNetwork pod serves in its node's namespace, on the node's address
    apply(
        &lab,
        &serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "hostnet", "namespace": NS},
        "spec": {"hostNetwork": true, "nodeName": node_names[2],
            "containers": [{"name": "app", "image": "weft.test/agnhost",
                "ports": [{"containerPort": 18080}]}]}}),
    );
    let p = within(POD_WAIT, "hostnet Ready", || {
        let p = get_json(&lab, &["pod", "-n", NS, "hostnet"]);
        ready(&p).then_some(p)
    });
    let node3 = lab.node(2).unwrap().clone();
    assert_eq!(p["status"]["podIP"], node3.underlay_v4.to_string());
    assert_eq!(pod_netns(&lab, "hostnet"), node3.netns);
    assert_eq!(
        ask(
            &lab,
            "node:n1",
            &node3.underlay_v4.to_string(),
            18080,
            "tcp",
            "hostname"
        ),
        Ok("hostnet".into())
    );

    // a restarted kubelet re-adopts its pods: same addresses, still Ready,
    // serving again, nothing attached twice
    let on_n1: Vec<&Value> = web
        .iter()
        .filter(|p| p["spec"]["nodeName"] == node_names[0].as_str())
        .collect();
    let before = weft_addresses(&lab);
    lab.stop_node_agent(0, "kubelet").expect("stop the kubelet");
    lab.start_kubelet(0).expect("start the kubelet again");
    for p in &on_n1 {
        let target = format!("{NS}/{}", name(p));
        within(Duration::from_secs(20), "re-adopted pod serves", || {
            ask(&lab, &first, &target, 8080, "tcp", "hostname")
                .ok()
                .filter(|r| *r == name(p))
        });
        let now = get_json(&lab, &["pod", "-n", NS, &name(p)]);
        assert!(ready(&now));
        assert_eq!(now["status"]["podIP"], p["status"]["podIP"]);
    }
    assert_eq!(
        weft_addresses(&lab),
        before,
        "no pod attached twice or lost"
    );

    // the heartbeat: every Lease renewed since the start (RFC 3339 in UTC
    // compares as text), no node tainted by the node lifecycle controller
    for (n, first) in lab.nodes().iter().zip(&renewed) {
        within(Duration::from_secs(15), "lease renewed", || {
            let lease = get_json(&lab, &["lease", "-n", "kube-node-lease", &n.name]);
            (lease["spec"]["renewTime"].as_str()? > first.as_str()).then_some(())
        });
        let node = get_json(&lab, &["node", &n.name]);
        assert!(
            node["spec"]["taints"].is_null(),
            "{}: {}",
            n.name,
            node["spec"]["taints"]
        );
        assert_eq!(condition(&node, "Ready").as_deref(), Some("True"));
    }

    // scaling to zero tears every web pod down through DEL
    kubectl(
        &lab,
        &["scale", "deployment", "-n", NS, "web", "--replicas=0"],
    );
    within(Duration::from_secs(60), "web pods gone", || {
        pods(&lab, "app=web").is_empty().then_some(())
    });
    let held = weft_addresses(&lab);
    for p in &web {
        assert!(!held.contains_key(p["status"]["podIP"].as_str().unwrap()));
    }

    let name = lab.name.clone();
    drop(lab);
    assert!(
        lab_netns(&name).is_empty(),
        "namespaces left: {:?}",
        lab_netns(&name)
    );
    assert!(!Path::new(&Lab::dir_of(&name)).exists());
}
