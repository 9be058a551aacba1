//! Prometheus metrics on `--metrics-listen ADDR:PORT` (off by default):
//! OpenMetrics text from the `prometheus-client` crate at `/metrics`.
//!
//! Most values are read from the agent when scraped ([`collect`]): flows
//! and drops, endpoints, IPAM pools, the Kubernetes watches, the fast path's
//! counters. What only the serving side sees is recorded as it happens and
//! kept here ([`Telemetry`]): CNI request latencies, datastore request
//! latencies through the [`store::TimedStore`] wrapper, and the Kubernetes
//! API server's through the clients' timing layer (`weft_k8s::timing`).
//!
//! Bind it to the node's own address (`--metrics-listen $NODE_IP:9964`) for a
//! Prometheus in the cluster, or to loopback for a local agent: the
//! metrics name pods and addresses, so never `0.0.0.0` on a host with a
//! public interface.

pub mod collect;
pub mod store;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use anyhow::Context;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::agent::Agent;

const IO_TIMEOUT: Duration = Duration::from_secs(2);

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// 0.5 ms to ~16 s, doubling: a CNI ADD takes milliseconds, a store
/// request under a slow etcd seconds.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// 0.1 ms to ~3 s, doubling: the goal for a policy change is 10 ms.
fn policy_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Latencies recorded as requests are served; always on (a few atomics
/// per request), exported only with `--metrics-listen`.
#[derive(Clone)]
pub struct Telemetry {
    cni: Histograms,
    store: Histograms,
    kubernetes: Histograms,
    /// A change of the API view seen by the policy thread to its round's
    /// map writes done (one series, no labels).
    policy_update: Histogram,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            cni: Family::new_with_constructor(latency_histogram),
            store: Family::new_with_constructor(latency_histogram),
            kubernetes: Family::new_with_constructor(latency_histogram),
            policy_update: policy_histogram(),
        }
    }
}

impl Telemetry {
    /// One CNI request: `verb` is `add`, `del`, `check`, `gc`, `status`.
    pub fn observe_cni(&self, verb: &'static str, ok: bool, took: Duration) {
        let outcome = if ok { "success" } else { "error" };
        self.cni
            .get_or_create(&vec![
                ("verb", verb.to_string()),
                ("outcome", outcome.into()),
            ])
            .observe(took.as_secs_f64());
    }

    /// One datastore request.
    pub fn observe_store(&self, backend: &'static str, op: &'static str, took: Duration) {
        self.store
            .get_or_create(&vec![("backend", backend.to_string()), ("op", op.into())])
            .observe(took.as_secs_f64());
    }

    /// One Kubernetes API request (weft_k8s::timing): the API server's verb
    /// and the resource.
    pub fn observe_kubernetes(&self, verb: &'static str, resource: &str, took: Duration) {
        self.kubernetes
            .get_or_create(&vec![
                ("verb", verb.to_string()),
                ("resource", resource.to_string()),
            ])
            .observe(took.as_secs_f64());
    }
}

impl Telemetry {
    /// One policy round a change of the API view started: from the
    /// policy thread waking to the change to the maps written.
    pub fn observe_policy_update(&self, took: Duration) {
        self.policy_update.observe(took.as_secs_f64());
    }
}

/// Sends the Kubernetes clients' request timings into [`telemetry`]; before
/// any client is built.
pub fn time_kubernetes_requests() {
    weft_k8s::timing::set_observer(|verb, resource, took| {
        telemetry().observe_kubernetes(verb, resource, took)
    });
}

/// The process's latencies (one weftd per process; tests that run several
/// agents in one process share them).
pub fn telemetry() -> &'static Telemetry {
    static T: OnceLock<Telemetry> = OnceLock::new();
    T.get_or_init(Telemetry::default)
}

/// Every metric of the agent.
pub fn registry(agent: &Arc<Agent>) -> Registry {
    let mut r = Registry::default();
    let t = telemetry();
    r.register(
        "weft_cni_request_duration_seconds",
        "Time weftd took to serve a CNI request, by verb and outcome",
        t.cni.clone(),
    );
    r.register(
        "weft_store_request_duration_seconds",
        "Time a datastore request took, by backend and operation",
        t.store.clone(),
    );
    r.register(
        "weft_kubernetes_api_request_duration_seconds",
        "Time the Kubernetes API server took to answer weftd (to the response head; a watch to its first answer), by verb and resource",
        t.kubernetes.clone(),
    );
    r.register(
        "weft_policy_update_duration_seconds",
        "Time from a change of the Kubernetes view (pods, namespaces, policies) seen by the policy thread to its round's map writes done",
        t.policy_update.clone(),
    );
    r.register_collector(Box::new(collect::AgentCollector::new(Arc::downgrade(
        agent,
    ))));
    r
}

/// The text a scrape gets.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = encode(&mut out, registry) {
        tracing::warn!(error = %e, "encoding the metrics");
    }
    out
}

/// Binds `addr` and serves `/metrics` on a thread of its own until the
/// process ends.
pub fn start(addr: SocketAddr, agent: &Arc<Agent>) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .with_context(|| format!("binding the metrics address {addr}; pick a free port"))?;
    let bound = listener.local_addr()?;
    let registry = registry(agent);
    let weak: Weak<Agent> = Arc::downgrade(agent);
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if weak.strong_count() == 0 {
                    return;
                }
                match conn {
                    // scrapes come every few seconds: one at a time is
                    // plenty, and a slow one is cut after IO_TIMEOUT
                    Ok(stream) => answer(stream, &registry),
                    Err(e) => tracing::debug!(error = %e, "metrics: accept failed"),
                }
            }
        })
        .context("spawning the metrics thread")?;
    tracing::info!(addr = %bound, "serving Prometheus metrics at /metrics");
    Ok(bound)
}

fn answer(mut stream: TcpStream, registry: &Registry) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut buf = [0u8; 2048];
    let mut len = 0;
    while len < buf.len() {
        match stream.read(&mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                len += n;
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(registry),
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            "not found: GET /metrics\n".to_string(),
        ),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

#[cfg(test)]
mod tests;
