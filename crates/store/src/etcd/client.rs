//! Requests to a set of etcd endpoints: keep-alive connection pool, fail-over
//! to the next endpoint, one deadline per operation.

use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::http::{self, Endpoint, Response};
use super::json::GatewayError;
use super::EtcdOptions;
use crate::StoreError;

/// Idle keep-alive connections kept per endpoint.
const POOL_PER_ENDPOINT: usize = 16;

/// Why a request failed.
#[derive(Debug)]
pub enum CallError {
    /// No endpoint answered usefully before the deadline.
    Unavailable(StoreError),
    /// etcd answered with a definite (not retriable) error.
    Gateway(GatewayError),
}

pub struct Client {
    pub endpoints: Vec<Endpoint>,
    pub opts: EtcdOptions,
    preferred: AtomicUsize,
    pool: Mutex<Vec<Vec<TcpStream>>>,
}

/// gRPC codes worth another endpoint: Unknown (etcd's "leader changed",
/// "request timed out"), DeadlineExceeded, Unavailable (no leader),
/// Canceled, Aborted.
fn retriable(e: &GatewayError) -> bool {
    matches!(e.code, 1 | 4 | 10 | 14)
        || (e.code == 2
            && ["leader", "timed out", "timeout", "stopped", "not capable"]
                .iter()
                .any(|m| e.message.contains(m)))
}

impl Client {
    pub fn new(endpoints: Vec<Endpoint>, opts: EtcdOptions) -> Client {
        let n = endpoints.len();
        Client {
            endpoints,
            opts,
            preferred: AtomicUsize::new(0),
            pool: Mutex::new((0..n).map(|_| Vec::new()).collect()),
        }
    }

    pub fn endpoint_list(&self) -> String {
        self.endpoints
            .iter()
            .map(|e| e.url.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Endpoint indices in the order to try them: the last one that worked
    /// first.
    pub fn order(&self) -> impl Iterator<Item = usize> {
        let n = self.endpoints.len();
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
                "no etcd endpoint of [{}] answered within {:?} ({})",
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
    pub fn backoff(round: u32, deadline: Instant) {
        let pause = Duration::from_millis(50 << round.min(4));
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(pause.min(left));
    }

    /// POSTs `body` to `path` and returns the body of a 200 response,
    /// trying endpoints in turn until the operation deadline.
    pub fn call(&self, path: &str, body: &serde_json::Value) -> Result<Vec<u8>, CallError> {
        let body = body.to_string().into_bytes();
        let started = Instant::now();
        let deadline = started + self.opts.deadline;
        let mut errors = Vec::new();
        for round in 0.. {
            for idx in self.order() {
                if Instant::now() >= deadline {
                    return Err(CallError::Unavailable(self.unavailable(started, &errors)));
                }
                let attempt_deadline = deadline.min(Instant::now() + self.opts.request_timeout);
                match self.attempt(idx, path, &body, attempt_deadline) {
                    Ok(b) => {
                        self.worked(idx);
                        return Ok(b);
                    }
                    Err(Attempt::Definite(e)) => {
                        self.worked(idx);
                        return Err(CallError::Gateway(e));
                    }
                    Err(Attempt::Retry(msg)) => {
                        tracing::debug!(endpoint = %self.endpoints[idx].url, error = %msg, "etcd request failed");
                        errors.retain(|e: &String| !e.starts_with(&self.endpoints[idx].url));
                        errors.push(format!("{}: {msg}", self.endpoints[idx].url));
                    }
                }
            }
            Self::backoff(round, deadline);
        }
        unreachable!("the loop above only ends by returning")
    }

    fn take_pooled(&self, idx: usize) -> Option<TcpStream> {
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)[idx]
            .pop()
    }

    fn give_back(&self, idx: usize, s: TcpStream) {
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pool[idx].len() < POOL_PER_ENDPOINT {
            pool[idx].push(s);
        }
    }

    /// Drops every idle connection (after a member restart, say).
    pub fn clear_pool(&self) {
        for p in self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter_mut()
        {
            p.clear();
        }
    }

    fn attempt(
        &self,
        idx: usize,
        path: &str,
        body: &[u8],
        deadline: Instant,
    ) -> Result<Vec<u8>, Attempt> {
        let ep = &self.endpoints[idx];
        // A pooled connection may have been closed by the server meanwhile:
        // if it fails before any response byte, retry once on a fresh one.
        let mut pooled = self.take_pooled(idx);
        loop {
            let was_pooled = pooled.is_some();
            let mut stream = match pooled.take() {
                Some(s) => s,
                None => {
                    let left =
                        http::remaining(deadline).map_err(|e| Attempt::Retry(e.to_string()))?;
                    ep.connect(left.min(self.opts.connect_timeout))
                        .map_err(|e| Attempt::Retry(format!("connect: {e}")))?
                }
            };
            let sent = http::write_post(&mut stream, ep, path, body, deadline);
            let head = sent.and_then(|()| Response::read_head(stream, deadline));
            let mut resp = match head {
                Ok(r) => r,
                Err(_) if was_pooled => continue,
                Err(e) => return Err(Attempt::Retry(e.to_string())),
            };
            let data = resp
                .read_to_end(deadline)
                .map_err(|e| Attempt::Retry(format!("reading the response: {e}")))?;
            if resp.reusable() {
                self.give_back(idx, resp.stream);
            }
            if resp.status == 200 {
                return Ok(data);
            }
            let v: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
            let e = GatewayError::from_value(&v).unwrap_or_else(|| GatewayError {
                code: if resp.status >= 500 { 14 } else { 2 },
                message: format!(
                    "HTTP {}: {}",
                    resp.status,
                    String::from_utf8_lossy(&data[..data.len().min(200)])
                ),
            });
            return Err(if retriable(&e) || resp.status >= 500 && e.code == 2 {
                Attempt::Retry(format!("etcd error {}: {}", e.code, e.message))
            } else {
                Attempt::Definite(e)
            });
        }
    }
}

enum Attempt {
    Retry(String),
    Definite(GatewayError),
}
