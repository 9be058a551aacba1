//! Deferred teardown of host-side veths.
//!
//! Deleting a veth makes the kernel wait for an RCU grace period (~20 ms here),
//! longer than everything else a DEL does. So DEL releases the addresses and
//! forgets the endpoint, then hands the interface to this queue and returns.
//! Ordering: the host name is a function of the attachment, and an ADD for an
//! attachment first waits until its name is no longer pending here, so a new
//! ADD never races the teardown of the old one. A crash with work still queued
//! leaves orphan veths that start-up reconciliation removes.

use std::collections::HashSet;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use weft_datapath::Datapath;

pub struct Teardown {
    tx: Mutex<Sender<String>>,
    pending: Arc<(Mutex<HashSet<String>>, Condvar)>,
}

impl Teardown {
    /// Starts the worker thread; it ends when the `Teardown` is dropped.
    pub fn start(datapath: Arc<dyn Datapath>) -> Teardown {
        let (tx, rx) = channel::<String>();
        let pending: Arc<(Mutex<HashSet<String>>, Condvar)> = Arc::default();
        let worker_pending = pending.clone();
        thread::Builder::new()
            .name("teardown".into())
            .spawn(move || {
                for name in rx {
                    if let Err(e) = datapath.detach(&name) {
                        tracing::warn!(link = %name, error = %e, "deferred teardown failed; start-up reconciliation will retry");
                    }
                    let (lock, cv) = &*worker_pending;
                    lock.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
                    cv.notify_all();
                }
            })
            .expect("spawn teardown thread");
        Teardown {
            tx: Mutex::new(tx),
            pending,
        }
    }

    /// Queues `host_ifname` for deletion.
    pub fn schedule(&self, host_ifname: String) {
        let (lock, _) = &*self.pending;
        lock.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host_ifname.clone());
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if tx.send(host_ifname.clone()).is_err() {
            // worker gone (shutdown): nothing will delete it now; reconciliation will
            lock.lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&host_ifname);
        }
    }

    /// Blocks until `host_ifname` is not pending, or `limit` passed. Returns
    /// whether it is clear.
    pub fn wait_clear(&self, host_ifname: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let (lock, cv) = &*self.pending;
        let mut pending = lock.lock().unwrap_or_else(|p| p.into_inner());
        while pending.contains(host_ifname) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            pending = cv
                .wait_timeout(pending, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    pub fn pending(&self) -> usize {
        let (lock, _) = &*self.pending;
        lock.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
