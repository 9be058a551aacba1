//! The members of an etcd cluster as etcd-client sees them, one client per
//! endpoint, and the failover every operation goes through: endpoints in
//! turn, starting with the last one that worked, each attempt bounded, the
//! whole operation bounded by one deadline.
//!
//! One client per endpoint rather than etcd-client's balanced channel over
//! all of them: the balancer picks an endpoint per request and a request
//! that lands on a dead member just fails, so weft would retry anyway; with
//! its own order weft keeps talking to the member that answers and names
//! every endpoint that did not when it gives up.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, KvClient, LeaseClient, MaintenanceClient, WatchClient};
use tokio::time::Instant;

use super::convert::{classify, Endpoint, Failure};
use super::EtcdOptions;
use crate::StoreError;

/// Responses can be large (a list of every IPAM block); etcd sends up to
/// its own limit, so the client takes what etcd sends.
const MAX_RESPONSE: usize = 1 << 30;

/// HTTP/2 pings on every connection, so a watch on a member that vanished
/// without a reset (a partition, a powered-off host) notices. etcd refuses
/// pings more often than every 5 s.
const PING_EVERY: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// One endpoint's clients (each a cheap handle on one HTTP/2 channel).
#[derive(Clone)]
pub struct Member {
    pub endpoint: Endpoint,
    pub kv: KvClient,
    pub watch: WatchClient,
    pub lease: LeaseClient,
    pub maintenance: MaintenanceClient,
}

/// Why an operation failed.
#[derive(Debug)]
pub enum CallError {
    /// No endpoint answered usefully before the deadline.
    Unavailable(StoreError),
    /// etcd answered with a definite error.
    Definite { code: i32, message: String },
}

pub struct Cluster {
    pub members: Vec<Member>,
    pub opts: EtcdOptions,
    preferred: AtomicUsize,
    /// Watch tasks alive (see `EtcdStore::live_watches`).
    pub live_watches: Arc<AtomicUsize>,
}

impl Cluster {
    /// Clients for every endpoint. etcd-client connects lazily, so this
    /// needs no member to be up; it must run on the store's runtime.
    pub async fn new(endpoints: Vec<Endpoint>, opts: EtcdOptions) -> Result<Cluster, String> {
        let mut members = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            let options = ConnectOptions::new()
                .with_connect_timeout(opts.connect_timeout)
                .with_keep_alive(PING_EVERY, PING_TIMEOUT)
                // Refuse answers from a member cut off from the leader (a
                // stale read, a watch that would never see new writes), as
                // the gateway's `hasleader` header did.
                .with_require_leader(true);
            let client = Client::connect([endpoint.dial.as_str()], Some(options))
                .await
                .map_err(|e| format!("{}: {e}", endpoint.url))?;
            members.push(Member {
                kv: client.kv_client().max_decoding_message_size(MAX_RESPONSE),
                watch: client
                    .watch_client()
                    .max_decoding_message_size(MAX_RESPONSE),
                lease: client.lease_client(),
                maintenance: client.maintenance_client(),
                endpoint,
            });
        }
        Ok(Cluster {
            members,
            opts,
            preferred: AtomicUsize::new(0),
            live_watches: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn endpoint_list(&self) -> String {
        self.members
            .iter()
            .map(|m| m.endpoint.url.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Member indices in the order to try them: the last one that worked
    /// first.
    pub fn order(&self) -> impl Iterator<Item = usize> {
        let n = self.members.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        (0..n).map(move |i| (first + i) % n)
    }

    pub fn worked(&self, idx: usize) {
        self.preferred.store(idx, Ordering::Relaxed);
    }

    /// The error once every endpoint failed until the deadline.
    pub fn unavailable(&self, started: Instant, errors: &[String]) -> StoreError {
        StoreError::Unavailable {
            reason: format!(
                "no etcd endpoint of [{}] answered within {:?} ({}); check that etcd runs and \
                 that this node reaches it",
                self.endpoint_list(),
                started.elapsed(),
                if errors.is_empty() {
                    "deadline exceeded".to_string()
                } else {
                    errors.join("; ")
                }
            ),
        }
    }

    /// Sleeps between rounds of endpoints, never past the deadline.
    pub async fn backoff(round: u32, deadline: Instant) {
        let pause = Duration::from_millis(50 << round.min(4));
        tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await;
    }

    /// Runs `op` against the members in turn until one answers or etcd
    /// answers definitely, within the operation deadline.
    pub async fn call<T, F, Fut>(&self, op: F) -> Result<T, CallError>
    where
        F: Fn(Member) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        let deadline = started + self.opts.deadline;
        let mut errors = Vec::new();
        for round in 0.. {
            for idx in self.order() {
                if Instant::now() >= deadline {
                    return Err(CallError::Unavailable(self.unavailable(started, &errors)));
                }
                let attempt = deadline.min(Instant::now() + self.opts.request_timeout);
                let m = &self.members[idx];
                let failure = match tokio::time::timeout_at(attempt, op(m.clone())).await {
                    Ok(Ok(v)) => {
                        self.worked(idx);
                        return Ok(v);
                    }
                    Ok(Err(e)) => classify(e),
                    Err(_) => {
                        Failure::Retry(format!("no answer within {:?}", self.opts.request_timeout))
                    }
                };
                match failure {
                    Failure::Definite { code, message } => {
                        self.worked(idx);
                        return Err(CallError::Definite { code, message });
                    }
                    Failure::Retry(msg) => {
                        tracing::debug!(endpoint = %m.endpoint.url, error = %msg, "etcd request failed");
                        let url = format!("{}: ", m.endpoint.url);
                        errors.retain(|e: &String| !e.starts_with(&url));
                        errors.push(format!("{url}{msg}"));
                    }
                }
            }
            Self::backoff(round, deadline).await;
        }
        unreachable!("the loop above only ends by returning")
    }
}
