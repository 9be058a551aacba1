//! Driving one watch into the index. Every watcher error is retryable
//! (kube-rs/kube#1615): the stream carries errors as items, the backoff
//! paces the retries, and this loop only records them. It never ends on an
//! error; a `?` here would end the watch for good.

use std::collections::HashSet;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};

use crate::convert::Convert;
use crate::guarded::Guarded;
use crate::index::{Index, Indexed};
use crate::model::ObjKey;

fn key_of(m: &ObjectMeta) -> ObjKey {
    ObjKey::new(
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

fn meta_of<K: k8s_openapi::Metadata<Ty = ObjectMeta>>(g: &Guarded<K>) -> &ObjectMeta {
    k8s_openapi::Metadata::metadata(g)
}

/// The object as weft's type, or its key and why it cannot be read.
fn decode<K>(g: &Guarded<K>) -> Result<K::Out, (ObjKey, String)>
where
    K: Convert + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    match g {
        Guarded::Ok(k) => k.convert().map_err(|e| (key_of(meta_of(g)), e.to_string())),
        Guarded::Bad { metadata, error } => Err((key_of(metadata), error.clone())),
    }
}

/// Applies a watcher's events to the index until the stream ends (a
/// backed-off watcher stream never does).
pub async fn drive<K, S>(index: Index, events: S)
where
    K: Convert + k8s_openapi::Metadata<Ty = ObjectMeta>,
    K::Out: Indexed,
    S: Stream<Item = Result<Event<Guarded<K>>, watcher::Error>>,
{
    let kind = <K as Convert>::KIND;
    // a relist in progress: what it listed so far, and the keys of what it
    // listed but could not read
    let mut relist: Option<(Vec<K::Out>, HashSet<ObjKey>)> = None;
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Err(e) => index.error(kind, short_error(&e.to_string())),
            Ok(Event::Init) => relist = Some(Default::default()),
            Ok(Event::InitApply(obj)) => {
                let (good, unreadable) = relist.get_or_insert_with(Default::default);
                match decode(&obj) {
                    Ok(o) => good.push(o),
                    Err((key, error)) => {
                        index.skipped(kind, &key, &error);
                        unreadable.insert(key);
                    }
                }
            }
            Ok(Event::InitDone) => {
                let (good, unreadable) = relist.take().unwrap_or_default();
                index.reset(good, &unreadable);
            }
            Ok(Event::Apply(obj)) => match decode(&obj) {
                Ok(o) => index.apply(o),
                Err((key, error)) => index.skipped(kind, &key, &error),
            },
            Ok(Event::Delete(obj)) => index.delete::<K::Out>(&key_of(meta_of(&obj))),
        }
    }
}

/// kube's API errors end with the whole `Status` in Debug form, which
/// repeats the message: the message is enough for a log line and `weft
/// status`.
fn short_error(e: &str) -> String {
    match e.find(" (Status {") {
        Some(i) => e[..i].to_string(),
        None => e.to_string(),
    }
}

/// Retry pacing for watches: doubling from 250 ms up to `max`. Kinder to a
/// struggling API server than a fixed delay, and capped low enough that a
/// restarted API server is caught up with within a few seconds (kube's
/// default caps at 30 s).
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    next: Duration,
    max: Duration,
}

impl WatchBackoff {
    pub const FIRST: Duration = Duration::from_millis(250);

    pub fn new(max: Duration) -> WatchBackoff {
        WatchBackoff {
            next: Self::FIRST,
            max,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let now = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        Some(now)
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn api_errors_lose_the_repeated_status() {
        let e = "failed to perform initial object list: ApiError: pods is forbidden: User \"x\" cannot list: Forbidden (Status { status: Some(Failure), code: 403 })";
        assert_eq!(
            super::short_error(e),
            "failed to perform initial object list: ApiError: pods is forbidden: User \"x\" cannot list: Forbidden"
        );
        assert_eq!(
            super::short_error("watch stream failed: eof"),
            "watch stream failed: eof"
        );
    }
}
