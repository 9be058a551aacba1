//! Support of the `--store kubernetes` lab tests: kubectl as admin,
//! polling, pods pinned to a node, probes between pods.

#![allow(dead_code)]

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use weft_lab::Lab;

use crate::common::bin_dir;

pub const PATIENCE: Duration = Duration::from_secs(180);
pub const POD_WAIT: Duration = Duration::from_secs(90);
pub const NS: &str = "kst";

pub use crate::common::kube::kubectl;

pub fn get_json(lab: &Lab, args: &[&str]) -> Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(lab, &a, None)).expect("kubectl prints JSON")
}

// the tests glob-import this module and common: one `within` for both
pub use crate::common::within;

pub fn ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// `weft lab probe` from one pod to another: the reply line or the error.
pub fn ask(lab: &Lab, from: &str, to: &str, line: &str) -> Result<String, String> {
    let o = Command::new(bin_dir().join("weft"))
        .args([
            "lab", "probe", "--name", &lab.name, "--from", from, "--to", to,
        ])
        .args([
            "--port",
            "8080",
            "--protocol",
            "tcp",
            "--timeout-ms",
            "2000",
        ])
        .args(["--send", line, "--print-reply"])
        .output()
        .expect("weft runs");
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if o.status.success() {
        Ok(out)
    } else {
        Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
    }
}

/// Creates `NS` and waits for its default ServiceAccount (a pod made
/// before it exists is refused).
pub fn create_namespace(lab: &Lab) {
    kubectl(lab, &["create", "namespace", NS], None);
    crate::common::kube::wait_default_service_account(lab, NS);
}

/// A pod of the lab's agnhost pinned to `node`, serving TCP 8080.
pub fn pod_on(lab: &Lab, name: &str, node: &str) {
    let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": "weft.test/agnhost",
                "ports": [{"containerPort": 8080}]}]}});
    kubectl(lab, &["apply", "-f", "-"], Some(pod.to_string().as_bytes()));
}

/// Waits until the pods of `NS` are `n`, all Ready; returns them.
pub fn ready_pods(lab: &Lab, n: usize) -> Vec<Value> {
    within(POD_WAIT, "pods Ready", || {
        let p = get_json(lab, &["pods", "-n", NS]);
        let items = p["items"].as_array()?.clone();
        (items.len() == n && items.iter().all(ready)).then_some(items)
    })
}

/// Every address the weftds hold, by pod name.
pub fn held(lab: &Lab) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut all = std::collections::BTreeMap::<String, Vec<String>>::new();
    for n in lab.nodes() {
        let eps: Vec<weft_api::EndpointInfo> =
            crate::common::api_get_at(&n.socket, weft_api::paths::ENDPOINTS);
        for e in eps {
            let ips = e.ips.iter().map(|i| i.addr().to_string());
            all.entry(e.pod.name.clone()).or_default().extend(ips);
        }
    }
    all
}
