//! A store watch: the API server's watch of the store's head (the
//! `WeftStore` object), each version holding an intent turned into the
//! events of that commit (the head's versions without one are the clears
//! of applied intents: nothing to see).
//! It resumes from the last version seen when the API server ends the
//! watch (it does every few minutes) and reports `Compacted` on 410 Gone,
//! so the caller re-lists.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use kube::api::{ListParams, WatchEvent, WatchParams};
use weft_store::{Revision, WatchMessage};

use super::api::{parse_head, Inner};
use super::objects::events;

/// Where the watch starts: `after`, or for 0 (nothing ever seen) the
/// revision of a listing of the (absent) head.
async fn start(inner: &Inner, after: Revision) -> Result<Revision, WatchMessage> {
    if after != 0 {
        return Ok(after);
    }
    let lp = ListParams::default().fields(&format!("metadata.name={}", inner.name));
    let list = inner
        .heads
        .list(&lp)
        .await
        .map_err(|e| WatchMessage::Closed {
            reason: format!("cannot list the store: {e}"),
        })?;
    if !list.items.is_empty() {
        // the history before the object's current version is not kept
        return Err(WatchMessage::Compacted {
            compact_revision: 0,
        });
    }
    list.metadata
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .ok_or(WatchMessage::Closed {
            reason: "the store listing has no resourceVersion".into(),
        })
}

/// Runs until the receiver is dropped, the history is gone or the API
/// server cannot be reached; the last message says which.
pub async fn run(inner: Arc<Inner>, prefix: String, after: Revision, tx: Sender<WatchMessage>) {
    let end = match follow(&inner, &prefix, after, &tx).await {
        Ok(()) => return,
        Err(m) => m,
    };
    let _ = tx.send(end);
}

async fn follow(
    inner: &Inner,
    prefix: &str,
    after: Revision,
    tx: &Sender<WatchMessage>,
) -> Result<(), WatchMessage> {
    let mut from = start(inner, after).await?;
    let wp = WatchParams::default().fields(&format!("metadata.name={}", inner.name));
    let mut failures = 0;
    loop {
        let stream = match inner.heads.watch(&wp, &from.to_string()).await {
            Ok(s) => s,
            Err(kube::Error::Api(s)) if s.code == 410 => {
                return Err(WatchMessage::Compacted {
                    compact_revision: from,
                })
            }
            Err(e) => {
                return Err(WatchMessage::Closed {
                    reason: format!("cannot watch the store: {e}"),
                })
            }
        };
        let mut stream = stream.boxed();
        loop {
            let ev = match stream.try_next().await {
                Ok(Some(ev)) => ev,
                // the API server ended the watch: resume where it was
                Ok(None) => break,
                Err(e) => {
                    failures += 1;
                    if failures > 3 {
                        return Err(WatchMessage::Closed {
                            reason: format!("the store watch failed: {e}"),
                        });
                    }
                    break;
                }
            };
            match ev {
                WatchEvent::Added(obj) | WatchEvent::Modified(obj) => {
                    let (head, rev) = parse_head(&obj).map_err(|e| WatchMessage::Closed {
                        reason: e.to_string(),
                    })?;
                    if rev <= from {
                        continue;
                    }
                    let evs = head.intent.map(|i| events(&i, prefix, rev));
                    for e in evs.unwrap_or_default() {
                        if tx.send(WatchMessage::Event(e)).is_err() {
                            return Ok(());
                        }
                    }
                    from = rev;
                    failures = 0;
                }
                WatchEvent::Deleted(_) => {
                    return Err(WatchMessage::Closed {
                        reason: format!("the WeftStore object {} was deleted", inner.name),
                    })
                }
                WatchEvent::Bookmark(b) => {
                    if let Ok(rv) = b.metadata.resource_version.parse::<Revision>() {
                        from = from.max(rv);
                    }
                }
                WatchEvent::Error(s) if s.code == 410 => {
                    return Err(WatchMessage::Compacted {
                        compact_revision: from,
                    })
                }
                WatchEvent::Error(s) => {
                    return Err(WatchMessage::Closed {
                        reason: format!("the store watch ended: {}", s.message),
                    })
                }
            }
        }
    }
}
