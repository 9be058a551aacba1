//! The page's JSON: flows merged from every node (filtered in weftd, as
//! `weft observe`), the pods for the matrix picker, and the matrix asked of
//! one node (every weftd compiles the whole cluster's policy).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use weft_api::stream::{stream, Streamed};
use weft_api::{
    paths, EndpointView, Flow, FlowFilter, FlowLine, FlowQuery, PolicyMatrix, PolicyMatrixRequest,
    Verdict, MATRIX_MAX_PODS,
};

use crate::observe::Target;

/// Flows a poll returns unless it asks for fewer (the table and the map
/// draw them all).
pub const DEFAULT_LAST: usize = 200;
const MAX_LAST: usize = 5000;
const TIMEOUT: Duration = Duration::from_secs(5);

/// A node that did not answer, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeError {
    pub node: String,
    pub error: String,
}

#[derive(Debug, Serialize)]
pub struct Flows {
    pub flows: Vec<Flow>,
    pub errors: Vec<NodeError>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Pod {
    /// `ns/name`.
    pub name: String,
    pub node: String,
    pub ip: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct Pods {
    pub pods: Vec<Pod>,
    pub errors: Vec<NodeError>,
}

/// The query string's filters, named as `weft observe`'s flags
/// (`from_pod` or `from-pod`); a value may list several, comma-separated.
pub fn flow_query(pairs: &[(String, String)]) -> Result<FlowQuery, String> {
    let mut f = FlowFilter::default();
    let mut last = DEFAULT_LAST;
    for (k, v) in pairs {
        let values = v
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from);
        match k.replace('-', "_").as_str() {
            "verdict" => {
                for x in values {
                    f.verdicts.push(Verdict::parse(&x).ok_or_else(|| {
                        format!("verdict {x:?}: use FORWARDED, DROPPED, AUDIT or TRANSLATED")
                    })?);
                }
            }
            "namespace" => f.namespaces.extend(values),
            "pod" => f.pods.extend(values),
            "from_pod" => f.from_pods.extend(values),
            "to_pod" => f.to_pods.extend(values),
            "label" => f.labels.extend(values),
            "from_label" => f.from_labels.extend(values),
            "to_label" => f.to_labels.extend(values),
            "protocol" => f.protocols.extend(values),
            "port" => {
                for x in values {
                    f.ports
                        .push(x.parse().map_err(|_| format!("port {x:?}: say a number"))?);
                }
            }
            "last" if !v.is_empty() => {
                last = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LAST).contains(n))
                    .ok_or_else(|| format!("last {v:?}: say 1 to {MAX_LAST}"))?;
            }
            "last" => {}
            other => return Err(format!("unknown filter {other:?}")),
        }
    }
    Ok(FlowQuery {
        filter: f,
        since_unix_nano: None,
        last: Some(last),
        follow: false,
    })
}

/// One node's stored flows matching `q`.
fn node_flows(t: &Target, q: &FlowQuery) -> Result<Vec<Flow>, String> {
    let body = serde_json::to_vec(q).map_err(|e| e.to_string())?;
    let mut flows = Vec::new();
    let r = stream(&t.socket, "POST", paths::FLOWS, &body, TIMEOUT, |line| {
        if let Ok(FlowLine::Flow(f)) = serde_json::from_slice::<FlowLine>(line) {
            flows.push(*f);
        }
        true
    });
    match r {
        Ok(Streamed::Done | Streamed::Stopped) => Ok(flows),
        Ok(Streamed::Refused(resp)) => {
            Err(serde_json::from_slice::<weft_api::CniError>(&resp.body)
                .map(|e| e.msg)
                .unwrap_or_else(|_| format!("weftd answered {}", resp.status)))
        }
        Err(e) => Err(format!("{e} (is weftd running at {}?)", t.socket.display())),
    }
}

/// Runs `f` on every target at once, in target order.
fn each<T: Send>(
    targets: &[Target],
    f: impl Fn(&Target) -> Result<T, String> + Sync,
) -> Vec<(String, Result<T, String>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .map(|t| (t.node.clone(), s.spawn(|| f(t))))
            .collect();
        handles
            .into_iter()
            .map(|(node, h)| {
                let r = h.join().unwrap_or_else(|_| Err("panicked".into()));
                (node, r)
            })
            .collect()
    })
}

/// Every node's matching flows, merged by time, the last `q.last`.
pub fn flows(targets: &[Target], q: &FlowQuery) -> Flows {
    let mut all = Vec::new();
    let mut errors = Vec::new();
    for (node, r) in each(targets, |t| node_flows(t, q)) {
        match r {
            Ok(f) => all.extend(f),
            Err(error) => errors.push(NodeError { node, error }),
        }
    }
    all.sort_by_key(|f| f.time_unix_nano);
    if let Some(n) = q.last {
        all.drain(..all.len().saturating_sub(n));
    }
    Flows { flows: all, errors }
}

/// Every node's pods (its endpoints), sorted by name.
pub fn pods(targets: &[Target]) -> Pods {
    let mut pods = Vec::new();
    let mut errors = Vec::new();
    let got = each(targets, |t| {
        crate::views::get::<Vec<EndpointView>>(&t.socket, paths::ENDPOINTS)
            .map_err(|e| format!("{e:#}"))
    });
    for (node, r) in got {
        match r {
            Ok(eps) => pods.extend(
                eps.into_iter()
                    .filter(|e| !e.endpoint.pod.name.is_empty())
                    .map(|e| Pod {
                        name: format!("{}/{}", e.endpoint.pod.namespace, e.endpoint.pod.name),
                        node: node.clone(),
                        ip: e
                            .endpoint
                            .ips
                            .first()
                            .map(|n| n.addr().to_string())
                            .unwrap_or_default(),
                        labels: e.kubernetes.map(|k| k.labels).unwrap_or_default(),
                    }),
            ),
            Err(error) => errors.push(NodeError { node, error }),
        }
    }
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    pods.dedup_by(|a, b| a.name == b.name);
    Pods { pods, errors }
}

/// The matrix from the first node that answers (each compiles the whole
/// cluster's policy, so any one will do).
pub fn matrix(targets: &[Target], body: &[u8]) -> Result<PolicyMatrix, String> {
    let req: PolicyMatrixRequest =
        serde_json::from_slice(body).map_err(|e| format!("cannot read the request: {e}"))?;
    if req.pods.is_empty() || req.pods.len() > MATRIX_MAX_PODS {
        return Err(format!("choose 1 to {MATRIX_MAX_PODS} pods"));
    }
    let mut why = Vec::new();
    for t in targets {
        match crate::policy_cmd::post::<_, PolicyMatrix>(&t.socket, paths::POLICY_MATRIX, &req) {
            Ok(m) => return Ok(m),
            Err(e) => why.push(format!("{}: {e:#}", t.node)),
        }
    }
    Err(why.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_read_as_observe_flags() {
        let q = flow_query(&pairs(&[
            ("verdict", "dropped,AUDIT"),
            ("namespace", "x"),
            ("pod", "x/a"),
            ("from-pod", "y/a"),
            ("to_pod", "x/b"),
            ("label", "app=web"),
            ("from_label", "pod=a"),
            ("to-label", "pod"),
            ("port", "80, 443"),
            ("protocol", "tcp"),
            ("last", "50"),
        ]))
        .unwrap();
        let f = &q.filter;
        assert_eq!(f.verdicts, vec![Verdict::Dropped, Verdict::Audit]);
        assert_eq!(f.namespaces, vec!["x"]);
        assert_eq!(f.pods, vec!["x/a"]);
        assert_eq!(f.from_pods, vec!["y/a"]);
        assert_eq!(f.to_pods, vec!["x/b"]);
        assert_eq!(f.labels, vec!["app=web"]);
        assert_eq!(f.from_labels, vec!["pod=a"]);
        assert_eq!(f.to_labels, vec!["pod"]);
        assert_eq!(f.ports, vec![80, 443]);
        assert_eq!(f.protocols, vec!["tcp"]);
        assert_eq!(q.last, Some(50));
        assert!(!q.follow);
    }

    #[test]
    fn empty_fields_match_everything_and_bad_ones_are_refused() {
        let q = flow_query(&pairs(&[("verdict", ""), ("pod", ""), ("last", "")])).unwrap();
        assert_eq!(q.filter, FlowFilter::default());
        assert_eq!(q.last, Some(DEFAULT_LAST));
        assert!(flow_query(&pairs(&[("verdict", "LOST")])).is_err());
        assert!(flow_query(&pairs(&[("port", "http")])).is_err());
        assert!(flow_query(&pairs(&[("last", "0")])).is_err());
        assert!(flow_query(&pairs(&[("last", "100000")])).is_err());
        assert!(flow_query(&pairs(&[("colour", "red")])).is_err());
    }
}
