//! Watches: a thread per watch holding a streaming `POST /v3/watch`,
//! reconnecting from the last delivered revision + 1 when the stream breaks.

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::client::Client;
use super::http::{self, Response};
use super::json::{b64, prefix_range, GatewayError, WatchResponse};
use crate::{Revision, StoreError, StoreResult, Watch, WatchMessage};

/// How often a blocked watch thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(250);

/// Stops the watch thread on drop: sets the flag and shuts the socket down so
/// a blocked read returns at once.
struct Guard {
    shared: Arc<Shared>,
}

struct Shared {
    stop: AtomicBool,
    socket: Mutex<Option<TcpStream>>,
}

impl Shared {
    fn set_socket(&self, s: Option<TcpStream>) {
        *self
            .socket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = s;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(s) = self
            .shared
            .socket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

struct Watcher {
    client: Arc<Client>,
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// The first revision not yet delivered.
    next: Revision,
    tx: Sender<WatchMessage>,
    shared: Arc<Shared>,
}

pub fn start(client: Arc<Client>, prefix: &str, after: Revision) -> StoreResult<Watch> {
    let (key, range_end) = prefix_range(prefix);
    let (tx, rx) = channel();
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        socket: Mutex::new(None),
    });
    let w = Watcher {
        client,
        key,
        range_end,
        next: after + 1,
        tx,
        shared: shared.clone(),
    };
    // The first stream is opened here, so an unreachable cluster is an error
    // of `watch` itself and the watch is in place when it returns.
    let first = w.open()?;
    std::thread::Builder::new()
        .name("etcd-watch".into())
        .spawn(move || w.run(first))
        .map_err(|e| StoreError::Unavailable {
            reason: format!("cannot start a watch thread: {e}"),
        })?;
    Ok(Watch {
        rx,
        guard: Box::new(Guard { shared }),
    })
}

enum Step {
    /// Keep reading this stream.
    Continue,
    /// The stream broke; open another.
    Reconnect(String),
    /// The watch is over (compacted, receiver gone, stopped).
    End,
}

impl Watcher {
    fn stopped(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    /// Opens a watch stream from `self.next` on the first endpoint that
    /// confirms it, within the client deadline.
    fn open(&self) -> StoreResult<Response> {
        let started = Instant::now();
        let deadline = started + self.client.opts.deadline;
        let body = json!({"create_request": {
            "key": b64(&self.key),
            "range_end": b64(&self.range_end),
            "start_revision": self.next.to_string(),
        }})
        .to_string();
        let mut errors = Vec::new();
        for round in 0.. {
            for idx in self.client.order() {
                if self.stopped() {
                    return Err(StoreError::Unavailable {
                        reason: "watch stopped".into(),
                    });
                }
                if Instant::now() >= deadline {
                    return Err(self.client.unavailable(started, &errors));
                }
                let attempt = deadline.min(Instant::now() + self.client.opts.request_timeout);
                match self.open_on(idx, body.as_bytes(), attempt) {
                    Ok(r) => {
                        self.client.worked(idx);
                        return Ok(r);
                    }
                    Err(e) => {
                        let url = &self.client.endpoints[idx].url;
                        errors.retain(|x: &String| !x.starts_with(url.as_str()));
                        errors.push(format!("{url}: {e}"));
                    }
                }
            }
            Client::backoff(round, deadline);
        }
        unreachable!("the loop above only ends by returning")
    }

    fn open_on(&self, idx: usize, body: &[u8], deadline: Instant) -> Result<Response, String> {
        let ep = &self.client.endpoints[idx];
        let left = http::remaining(deadline).map_err(|e| e.to_string())?;
        let mut s = ep
            .connect(left.min(self.client.opts.connect_timeout))
            .map_err(|e| format!("connect: {e}"))?;
        // Registered at once, so dropping the guard interrupts a slow answer.
        self.shared.set_socket(s.try_clone().ok());
        if self.stopped() {
            return Err("watch stopped".into());
        }
        http::write_post(&mut s, ep, "/v3/watch", body, deadline).map_err(|e| e.to_string())?;
        let mut r = Response::read_head(s, deadline).map_err(|e| e.to_string())?;
        if r.status != 200 {
            let data = r.read_to_end(deadline).unwrap_or_default();
            return Err(format!(
                "HTTP {}: {}",
                r.status,
                String::from_utf8_lossy(&data[..data.len().min(200)])
            ));
        }
        // Wait for the "created" message; leave later lines in the buffer.
        loop {
            if let Some(i) = r.body.iter().position(|&b| b == b'\n') {
                let v: Value = serde_json::from_slice(&r.body[..i]).map_err(|e| e.to_string())?;
                if let Some(e) = GatewayError::from_value(&v) {
                    return Err(format!("etcd error {}: {}", e.code, e.message));
                }
                if v["result"]["created"].as_bool() == Some(true) {
                    r.body.drain(..=i);
                }
                // Anything else before "created" (should not happen) stays
                // for the reader.
                return Ok(r);
            }
            if r.is_done() {
                return Err("watch stream ended before it was created".into());
            }
            r.stream
                .set_read_timeout(Some(http::remaining(deadline).map_err(|e| e.to_string())?))
                .map_err(|e| e.to_string())?;
            r.read_more().map_err(|e| e.to_string())?;
        }
    }

    fn run(mut self, first: Response) {
        let mut conn = Some(first);
        let mut lost_since: Option<Instant> = None;
        let mut round = 0;
        while !self.stopped() {
            let Some(r) = conn.as_mut() else {
                match self.open() {
                    Ok(r) => {
                        tracing::info!(next = self.next, "etcd watch reconnected");
                        conn = Some(r);
                        lost_since = None;
                        round = 0;
                    }
                    Err(e) => {
                        let since = *lost_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= self.client.opts.watch_reconnect_for {
                            let _ = self.tx.send(WatchMessage::Closed {
                                reason: format!("etcd watch lost: {e}"),
                            });
                            return;
                        }
                        let pause = Duration::from_millis(100 << round.min(3));
                        round += 1;
                        std::thread::sleep(pause.min(POLL));
                    }
                }
                continue;
            };
            match self.pump(r) {
                Step::Continue => {}
                Step::Reconnect(why) => {
                    tracing::info!(next = self.next, reason = %why, "etcd watch stream lost");
                    self.shared.set_socket(None);
                    conn = None;
                    lost_since.get_or_insert_with(Instant::now);
                }
                Step::End => return,
            }
        }
    }

    /// Delivers the complete messages buffered, then reads once more.
    fn pump(&mut self, r: &mut Response) -> Step {
        while let Some(line) = r.take_line() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let step = self.message(&line);
            if !matches!(step, Step::Continue) {
                return step;
            }
        }
        if r.is_done() {
            return Step::Reconnect("the stream ended".into());
        }
        if let Err(e) = r.stream.set_read_timeout(Some(POLL)) {
            return Step::Reconnect(e.to_string());
        }
        match r.read_more() {
            Ok(()) => Step::Continue,
            Err(e) if http::is_timeout(&e) => Step::Continue,
            Err(e) => Step::Reconnect(e.to_string()),
        }
    }

    fn message(&mut self, line: &[u8]) -> Step {
        let v: Value = match serde_json::from_slice(line) {
            Ok(v) => v,
            Err(e) => return Step::Reconnect(format!("unreadable watch message: {e}")),
        };
        if let Some(e) = GatewayError::from_value(&v) {
            return Step::Reconnect(format!("etcd error {}: {}", e.code, e.message));
        }
        let resp: WatchResponse = match serde_json::from_value(v["result"].clone()) {
            Ok(r) => r,
            Err(e) => return Step::Reconnect(format!("unreadable watch message: {e}")),
        };
        if resp.compact_revision > 0 {
            let _ = self.tx.send(WatchMessage::Compacted {
                compact_revision: resp.compact_revision,
            });
            return Step::End;
        }
        if resp.canceled {
            return Step::Reconnect(format!("watch canceled: {}", resp.cancel_reason));
        }
        let mut last = None;
        for ev in resp.events {
            let ev = match ev.into_event() {
                Ok(ev) => ev,
                Err(e) => return Step::Reconnect(format!("unreadable watch event: {e}")),
            };
            let rev = ev.kv.mod_revision;
            if rev < self.next {
                continue; // already delivered before a reconnect
            }
            last = Some(rev);
            if self.tx.send(WatchMessage::Event(ev)).is_err() {
                return Step::End;
            }
        }
        // Every event of a revision comes in one message: resume after it.
        if let Some(rev) = last {
            self.next = rev + 1;
        }
        Step::Continue
    }
}
