//! The pure part of the kubelet: a Pod cut to the fields it acts on, what to
//! do next for it, and the status it should show. Nothing here touches the
//! kernel or the API server.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use crate::agnhost::Proto;

/// The grace period when a pod names none (the API's default).
pub const DEFAULT_GRACE_SECONDS: i64 = 30;
/// The kubelet waits at most this long for a terminating pod, whatever it asks.
pub const MAX_GRACE_SECONDS: i64 = 600;

/// A condition as the pod shows it: status and when it last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub status: String,
    pub since: Option<String>,
}

/// The fields of a Pod the kubelet reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub host_network: bool,
    /// Every declared container port, sorted and without repeats.
    pub ports: Vec<(u16, Proto)>,
    /// `(name, image)` of every container.
    pub containers: Vec<(String, String)>,
    /// Condition types of `spec.readinessGates`.
    pub gates: Vec<String>,
    pub conditions: BTreeMap<String, Cond>,
    /// `deletionTimestamp` is set.
    pub deleting: bool,
    /// How long a terminating pod keeps serving.
    pub grace_seconds: i64,
    /// The status the pod shows now, in the terms the kubelet writes.
    pub shown: Shown,
}

/// The part of a pod's status the kubelet owns, for comparing "what the pod
/// shows" with "what it should show" (times left out: a patch is due only
/// when something changed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shown {
    pub phase: String,
    pub pod_ips: Vec<String>,
    pub host_ips: Vec<String>,
    pub has_start_time: bool,
    /// Statuses of the conditions the kubelet owns.
    pub conditions: BTreeMap<String, String>,
    /// `(name, ready, running)` per container.
    pub containers: Vec<(String, bool, bool)>,
}

/// The condition types this kubelet writes; others (PodScheduled, the
/// readiness gates' own) belong to someone else and are never patched.
pub const OWN_CONDITIONS: [&str; 4] = [
    "PodReadyToStartContainers",
    "Initialized",
    "ContainersReady",
    "Ready",
];

impl PodView {
    /// Cuts a Pod to its view; `None` when it lacks a name or UID.
    pub fn of(pod: &Pod) -> Option<PodView> {
        let meta = &pod.metadata;
        let spec = pod.spec.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let mut ports: Vec<(u16, Proto)> = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let port = u16::try_from(p.container_port).ok().filter(|p| *p > 0)?;
                Some((port, Proto::parse(p.protocol.as_deref().unwrap_or("TCP"))?))
            })
            .collect();
        ports.sort();
        ports.dedup();
        let conditions: BTreeMap<String, Cond> = status
            .conditions
            .iter()
            .flatten()
            .map(|c| {
                let since = c
                    .last_transition_time
                    .as_ref()
                    .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
                (
                    c.type_.clone(),
                    Cond {
                        status: c.status.clone(),
                        since,
                    },
                )
            })
            .collect();
        let grace = meta
            .deletion_grace_period_seconds
            .or(spec.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE_SECONDS)
            .clamp(0, MAX_GRACE_SECONDS);
        let shown = Shown {
            phase: status.phase.clone().unwrap_or_default(),
            pod_ips: status
                .pod_ips
                .iter()
                .flatten()
                .map(|p| p.ip.clone())
                .collect(),
            host_ips: status
                .host_ips
                .iter()
                .flatten()
                .map(|p| p.ip.clone())
                .collect(),
            has_start_time: status.start_time.is_some(),
            conditions: conditions
                .iter()
                .filter(|(t, _)| OWN_CONDITIONS.contains(&t.as_str()))
                .map(|(t, c)| (t.clone(), c.status.clone()))
                .collect(),
            containers: status
                .container_statuses
                .iter()
                .flatten()
                .map(|c| {
                    let running = c.state.as_ref().is_some_and(|s| s.running.is_some());
                    (c.name.clone(), c.ready, running)
                })
                .collect(),
        };
        Some(PodView {
            uid: meta.uid.clone()?,
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone()?,
            host_network: spec.host_network.unwrap_or(false),
            ports,
            containers: spec
                .containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect(),
            gates: spec
                .readiness_gates
                .iter()
                .flatten()
                .map(|g| g.condition_type.clone())
                .collect(),
            conditions,
            deleting: meta.deletion_timestamp.is_some(),
            grace_seconds: grace,
            shown,
        })
    }

    /// Whether every readiness gate's condition is True (no gates: true).
    pub fn gates_pass(&self) -> bool {
        self.gates
            .iter()
            .all(|g| self.conditions.get(g).is_some_and(|c| c.status == "True"))
    }
}

/// Where this kubelet stands with a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// Not started here (or not any more).
    Absent,
    /// Namespace, address and servers are up.
    Running,
    /// Deletion seen: not Ready, still serving until the grace period ends.
    Terminating,
}

/// What to do with a pod after seeing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create the sandbox (netns, CNI ADD) and the servers, then write status.
    Start,
    /// Bring the status in line (when it differs).
    Status,
    /// Deletion seen on a running pod: write "not Ready" now, tear down after
    /// this many seconds.
    Terminate { grace_seconds: i64 },
    /// Deleted before it ever ran here: delete the object at once.
    DeleteObject,
}

/// The next step for `pod` given where this kubelet stands with it.
pub fn plan(pod: &PodView, local: Local) -> Step {
    match (local, pod.deleting) {
        (Local::Absent, false) => Step::Start,
        (Local::Absent, true) => Step::DeleteObject,
        (Local::Running, true) => Step::Terminate {
            grace_seconds: pod.grace_seconds,
        },
        (Local::Running, false) | (Local::Terminating, _) => Step::Status,
    }
}

/// What the kubelet knows of a pod it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running<'a> {
    /// The pod's addresses (hostNetwork: the node's), IPv4 first.
    pub ips: &'a [IpAddr],
    pub host_ips: &'a [IpAddr],
    pub container_id: &'a str,
    /// RFC 3339, when the sandbox came up.
    pub started_at: &'a str,
    pub terminating: bool,
}

/// The status `pod` should show while it runs here.
pub fn desired(pod: &PodView, run: &Running<'_>) -> Shown {
    let containers_ready = !run.terminating;
    let ready = containers_ready && pod.gates_pass();
    let b = |v: bool| if v { "True" } else { "False" }.to_string();
    Shown {
        phase: "Running".into(),
        pod_ips: ordered(run.ips),
        host_ips: ordered(run.host_ips),
        has_start_time: true,
        conditions: [
            ("PodReadyToStartContainers", b(true)),
            ("Initialized", b(true)),
            ("ContainersReady", b(containers_ready)),
            ("Ready", b(ready)),
        ]
        .into_iter()
        .map(|(t, s)| (t.to_string(), s))
        .collect(),
        containers: pod
            .containers
            .iter()
            .map(|(n, _)| (n.clone(), containers_ready, true))
            .collect(),
    }
}

/// Addresses as strings, IPv4 first (the pod's primary family, as the lab's
/// Services are IPv4 first), at most one per family as the API requires.
fn ordered(ips: &[IpAddr]) -> Vec<String> {
    let v4 = ips.iter().find(|i| i.is_ipv4());
    let v6 = ips.iter().find(|i| i.is_ipv6());
    v4.into_iter().chain(v6).map(ToString::to_string).collect()
}

/// The strategic-merge patch of `pods/status` that makes `pod` show `want`.
/// Conditions merge by type, so the readiness gates' conditions that tests
/// set stay untouched; a condition keeps its transition time unless its
/// status changes.
pub fn status_patch(pod: &PodView, want: &Shown, run: &Running<'_>, now: &str) -> Value {
    let conditions: Vec<Value> = want
        .conditions
        .iter()
        .map(|(t, s)| {
            let since = pod
                .conditions
                .get(t)
                .filter(|c| &c.status == s)
                .and_then(|c| c.since.clone())
                .unwrap_or_else(|| now.to_string());
            json!({"type": t, "status": s, "lastTransitionTime": since})
        })
        .collect();
    let containers: Vec<Value> = pod
        .containers
        .iter()
        .zip(&want.containers)
        .map(|((name, image), (_, ready, _))| {
            json!({
                "name": name,
                "image": image,
                "imageID": "",
                "containerID": format!("weft-lab://{}", run.container_id),
                "ready": ready,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": run.started_at}},
            })
        })
        .collect();
    let mut status = json!({
        "phase": want.phase,
        "conditions": conditions,
        "containerStatuses": containers,
        "startTime": run.started_at,
    });
    if let Some(first) = want.pod_ips.first() {
        status["podIP"] = json!(first);
        status["podIPs"] = json!(want
            .pod_ips
            .iter()
            .map(|ip| json!({"ip": ip}))
            .collect::<Vec<_>>());
    }
    if let Some(first) = want.host_ips.first() {
        status["hostIP"] = json!(first);
        status["hostIPs"] = json!(want
            .host_ips
            .iter()
            .map(|ip| json!({"ip": ip}))
            .collect::<Vec<_>>());
    }
    json!({ "status": status })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(extra: Value) -> Pod {
        let mut v = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "demo", "uid": "u-1"},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "app", "image": "agnhost", "ports": [
                    {"containerPort": 8080},
                    {"containerPort": 8081, "protocol": "UDP"},
                    {"containerPort": 8080, "protocol": "TCP"},
                    {"containerPort": 9000, "protocol": "SCTP"}]},
                {"name": "side", "ports": [{"containerPort": 53, "protocol": "UDP"}]}]},
        });
        merge(&mut v, extra);
        serde_json::from_value(v).unwrap()
    }

    fn merge(a: &mut Value, b: Value) {
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn run<'a>(ips: &'a [IpAddr], terminating: bool) -> Running<'a> {
        Running {
            ips,
            host_ips: ips,
            container_id: "c0ffee",
            started_at: "2026-12-03T10:00:00Z",
            terminating,
        }
    }

    #[test]
    fn ports_of_every_container_once_and_only_tcp_and_udp() {
        let v = PodView::of(&pod(json!({}))).unwrap();
        assert_eq!(
            v.ports,
            vec![(53, Proto::Udp), (8080, Proto::Tcp), (8081, Proto::Udp)]
        );
        assert_eq!(v.containers[0], ("app".into(), "agnhost".into()));
        assert_eq!(v.grace_seconds, DEFAULT_GRACE_SECONDS);
        assert!(!v.host_network && !v.deleting);
    }

    #[test]
    fn the_grace_period_of_a_deletion_wins_over_the_specs() {
        let v = PodView::of(&pod(json!({"spec": {"terminationGracePeriodSeconds": 5}}))).unwrap();
        assert_eq!(v.grace_seconds, 5);
        let v = PodView::of(&pod(json!({
            "metadata": {"deletionTimestamp": "2026-12-03T10:00:00Z", "deletionGracePeriodSeconds": 2},
            "spec": {"terminationGracePeriodSeconds": 5}}))).unwrap();
        assert_eq!(v.grace_seconds, 2);
        assert!(v.deleting);
        let v = PodView::of(&pod(
            json!({"spec": {"terminationGracePeriodSeconds": 100000}}),
        ))
        .unwrap();
        assert_eq!(v.grace_seconds, MAX_GRACE_SECONDS);
    }

    #[test]
    fn plan_follows_the_pods_life() {
        let live = PodView::of(&pod(json!({}))).unwrap();
        let mut gone = live.clone();
        gone.deleting = true;
        gone.grace_seconds = 3;
        assert_eq!(plan(&live, Local::Absent), Step::Start);
        assert_eq!(plan(&live, Local::Running), Step::Status);
        assert_eq!(
            plan(&gone, Local::Running),
            Step::Terminate { grace_seconds: 3 }
        );
        assert_eq!(plan(&gone, Local::Terminating), Step::Status);
        assert_eq!(plan(&gone, Local::Absent), Step::DeleteObject);
    }

    #[test]
    fn without_gates_a_running_pod_is_ready() {
        let v = PodView::of(&pod(json!({}))).unwrap();
        let ips: Vec<IpAddr> = vec!["fd00::7".parse().unwrap(), "10.0.0.7".parse().unwrap()];
        let s = desired(&v, &run(&ips, false));
        assert_eq!(s.phase, "Running");
        assert_eq!(s.pod_ips, vec!["10.0.0.7", "fd00::7"], "IPv4 first");
        assert_eq!(s.conditions["Ready"], "True");
        assert_eq!(s.conditions["ContainersReady"], "True");
        assert_eq!(s.containers.len(), 2);
        assert!(s.containers.iter().all(|c| c.1 && c.2));
    }

    #[test]
    fn a_pod_is_ready_only_when_every_gate_is_true() {
        let gated = |conds: Value| {
            PodView::of(&pod(json!({
                "spec": {"readinessGates": [{"conditionType": "example.com/a"}, {"conditionType": "example.com/b"}]},
                "status": {"conditions": conds}})))
            .unwrap()
        };
        let ips: Vec<IpAddr> = vec!["10.0.0.7".parse().unwrap()];
        let ready = |v: &PodView| desired(v, &run(&ips, false)).conditions["Ready"].clone();
        assert_eq!(ready(&gated(json!([]))), "False", "unset gates fail");
        let one = gated(json!([{"type": "example.com/a", "status": "True"}]));
        assert_eq!(ready(&one), "False");
        let both = gated(json!([{"type": "example.com/a", "status": "True"},
                                {"type": "example.com/b", "status": "True"}]));
        assert_eq!(ready(&both), "True");
        assert_eq!(
            desired(&both, &run(&ips, false)).conditions["ContainersReady"],
            "True",
            "gates do not touch ContainersReady"
        );
        let flipped = gated(json!([{"type": "example.com/a", "status": "True"},
                                   {"type": "example.com/b", "status": "False"}]));
        assert_eq!(ready(&flipped), "False");
    }

    #[test]
    fn a_terminating_pod_is_not_ready_but_runs() {
        let v = PodView::of(&pod(json!({}))).unwrap();
        let ips: Vec<IpAddr> = vec!["10.0.0.7".parse().unwrap()];
        let s = desired(&v, &run(&ips, true));
        assert_eq!(s.phase, "Running");
        assert_eq!(s.conditions["Ready"], "False");
        assert_eq!(s.conditions["ContainersReady"], "False");
        assert!(s.containers.iter().all(|c| !c.1 && c.2));
    }

    #[test]
    fn a_patched_pod_shows_what_was_wanted_and_needs_no_second_patch() {
        let v = PodView::of(&pod(json!({"status": {"conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-12-03T09:00:00Z"},
            {"type": "Ready", "status": "False", "lastTransitionTime": "2026-12-03T09:00:00Z"},
            {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-12-03T09:30:00Z"}]}})))
        .unwrap();
        let ips: Vec<IpAddr> = vec!["10.0.0.7".parse().unwrap(), "fd00::7".parse().unwrap()];
        let r = run(&ips, false);
        let want = desired(&v, &r);
        assert_ne!(v.shown, want);
        let patch = status_patch(&v, &want, &r, "2026-12-03T10:00:05Z");
        let st = &patch["status"];
        assert_eq!(st["podIP"], "10.0.0.7");
        assert_eq!(st["podIPs"][1]["ip"], "fd00::7");
        let cond = |t: &str| {
            st["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == t)
                .cloned()
        };
        assert!(cond("PodScheduled").is_none(), "not ours to write");
        assert_eq!(
            cond("Ready").unwrap()["lastTransitionTime"],
            "2026-12-03T10:00:05Z"
        );
        assert_eq!(
            cond("Initialized").unwrap()["lastTransitionTime"],
            "2026-12-03T09:30:00Z",
            "unchanged status keeps its time"
        );
        // the API server merges the patch in; the result needs nothing more
        let mut merged = serde_json::to_value(pod(json!({}))).unwrap();
        merge(&mut merged, patch);
        let after = PodView::of(&serde_json::from_value(merged).unwrap()).unwrap();
        assert_eq!(after.shown, want);
    }
}
