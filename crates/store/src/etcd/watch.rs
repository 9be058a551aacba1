//! Watches: a task per watch on the store's runtime, holding one etcd watch
//! stream and feeding the blocking [`Watch`] channel; when the stream breaks
//! it opens another (on any member) from the last delivered revision + 1,
//! so a leader change or member loss neither loses nor duplicates events.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{WatchOptions, WatchResponse, WatchStream};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::cluster::{CallError, Cluster};
use super::convert::{definite, etcd_rev, event, prefix_range, rev};
use crate::{Revision, StoreError, StoreResult, WatchMessage};

/// Longest pause between two tries to reopen a lost stream.
const REOPEN_PAUSE_MAX: Duration = Duration::from_millis(250);

/// Ends the watch's task on drop (the stream goes with it).
pub struct Guard(pub AbortHandle);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counts the task among the live ones while it exists.
struct Alive(Arc<AtomicUsize>);

impl Alive {
    fn new(count: &Arc<AtomicUsize>) -> Alive {
        count.fetch_add(1, Ordering::AcqRel);
        Alive(count.clone())
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct Watcher {
    cluster: Arc<Cluster>,
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// The first revision not yet delivered.
    next: Revision,
    tx: Sender<WatchMessage>,
}

/// What the stream said.
enum Step {
    /// Keep reading this stream.
    Continue,
    /// The stream broke; open another.
    Reopen(String),
    /// The watch is over (compacted, receiver gone).
    End,
}

impl Watcher {
    pub fn new(
        cluster: Arc<Cluster>,
        prefix: &str,
        after: Revision,
        tx: Sender<WatchMessage>,
    ) -> Watcher {
        let (key, range_end) = prefix_range(prefix);
        Watcher {
            cluster,
            key,
            range_end,
            next: after + 1,
            tx,
        }
    }

    /// Opens a stream from `self.next` on the first member that confirms it
    /// (etcd's `created`), within the operation deadline.
    pub async fn open(&self) -> StoreResult<WatchStream> {
        let key = self.key.clone();
        let options = WatchOptions::new()
            .with_range(self.range_end.clone())
            .with_start_revision(etcd_rev(self.next));
        let r = self
            .cluster
            .call(|mut m| {
                let (key, options) = (key.clone(), options.clone());
                async move {
                    let mut stream = m.watch.watch(key, Some(options)).await?;
                    // etcd confirms the watch before anything else; a watch
                    // it refuses at once comes back canceled.
                    match stream.message().await? {
                        Some(r) if r.created() && !r.canceled() => Ok(stream),
                        Some(r) => Err(etcd_client::Error::WatchError(format!(
                            "watch refused: {}",
                            r.cancel_reason()
                        ))),
                        None => Err(etcd_client::Error::WatchError(
                            "watch stream ended before it was created".into(),
                        )),
                    }
                }
            })
            .await;
        r.map_err(|e| match e {
            CallError::Unavailable(e) => e,
            CallError::Definite { code, message } => definite("watch", code, &message),
        })
    }

    /// Starts the task on `rt`; it is counted live from now until it ends.
    pub fn spawn(self, rt: &tokio::runtime::Handle, stream: WatchStream) -> Guard {
        let alive = Alive::new(&self.cluster.live_watches);
        Guard(rt.spawn(self.run(stream, alive)).abort_handle())
    }

    /// The task: reads `stream`, reopening it when it breaks, until the
    /// watch is compacted, the receiver is gone, or no member has taken the
    /// watch back for `watch_reconnect_for`.
    async fn run(mut self, mut stream: WatchStream, _alive: Alive) {
        loop {
            let step = match stream.message().await {
                Ok(Some(resp)) => self.message(&resp),
                Ok(None) => Step::Reopen("the stream ended".into()),
                Err(e) => Step::Reopen(e.to_string()),
            };
            match step {
                Step::Continue => {}
                Step::End => return,
                Step::Reopen(why) => {
                    tracing::info!(next = self.next, reason = %why, "etcd watch stream lost");
                    match self.reopen().await {
                        Some(s) => stream = s,
                        None => return,
                    }
                }
            }
        }
    }

    /// Opens a new stream, retrying until `watch_reconnect_for` has passed;
    /// then tells the watcher the watch is closed.
    async fn reopen(&self) -> Option<WatchStream> {
        let since = Instant::now();
        let mut pause = Duration::from_millis(100);
        loop {
            match self.open().await {
                Ok(s) => {
                    tracing::info!(next = self.next, "etcd watch reconnected");
                    return Some(s);
                }
                Err(e) => {
                    if since.elapsed() >= self.cluster.opts.watch_reconnect_for {
                        let reason = match e {
                            StoreError::Unavailable { reason } => reason,
                            other => other.to_string(),
                        };
                        let _ = self.tx.send(WatchMessage::Closed {
                            reason: format!("etcd watch lost: {reason}"),
                        });
                        return None;
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(REOPEN_PAUSE_MAX);
                }
            }
        }
    }

    fn message(&mut self, resp: &WatchResponse) -> Step {
        if resp.compact_revision() > 0 {
            let _ = self.tx.send(WatchMessage::Compacted {
                compact_revision: rev(resp.compact_revision()),
            });
            return Step::End;
        }
        if resp.canceled() {
            return Step::Reopen(format!("watch canceled: {}", resp.cancel_reason()));
        }
        let mut last = None;
        for e in resp.events() {
            let Some(ev) = event(e) else {
                return Step::Reopen("a watch event without a key".into());
            };
            let r = ev.kv.mod_revision;
            if r < self.next {
                continue; // already delivered before a reconnect
            }
            last = Some(r);
            if self.tx.send(WatchMessage::Event(ev)).is_err() {
                return Step::End;
            }
        }
        // Every event of a revision comes in one message: resume after it.
        if let Some(r) = last {
            self.next = r + 1;
        }
        Step::Continue
    }
}
