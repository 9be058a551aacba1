//! Deferred teardown of host-side veths.
//!
//! Deleting a veth makes the kernel wait for an RCU grace period (~20 ms here),
//! longer than everything else a DEL does. So DEL marks the endpoint deleting
//! and releases the addresses, then hands the interface to this queue and
//! returns; the queue deletes the veth and only then forgets the endpoint's
//! record, so the record outlives the interface. Ordering: the host name is a
//! function of the attachment, and an ADD for an attachment first waits until
//! its name is no longer pending here, so a new ADD never races the teardown
//! of the old one. A crash with work still queued leaves records marked
//! deleting (and orphan veths) that start-up reconciliation finishes.

use std::collections::HashSet;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use weft_api::Attachment;
use weft_datapath::Datapath;

use crate::endpoints::Endpoints;

/// One interface to delete, and the endpoint record to forget after it.
struct Job {
    host_ifname: String,
    forget: Option<Attachment>,
}

pub struct Teardown {
    tx: Mutex<Sender<Job>>,
    pending: Arc<(Mutex<HashSet<String>>, Condvar)>,
}

impl Teardown {
    /// Starts the worker thread; it ends when the `Teardown` is dropped.
    pub fn start(datapath: Arc<dyn Datapath>, endpoints: Arc<Endpoints>) -> Teardown {
        let (tx, rx) = channel::<Job>();
        let pending: Arc<(Mutex<HashSet<String>>, Condvar)> = Arc::default();
        let worker_pending = pending.clone();
        thread::Builder::new()
            .name("teardown".into())
            .spawn(move || {
                for job in rx {
                    let name = job.host_ifname;
                    match (datapath.detach(&name), job.forget) {
                        (Ok(()), Some(a)) => {
                            if let Err(e) = endpoints.remove(&a) {
                                tracing::warn!(link = %name, error = %e, "cannot forget a deleted endpoint; weftd finishes it at its next start");
                            }
                        }
                        (Ok(()), None) => {}
                        (Err(e), _) => {
                            // the record (if any) stays marked deleting: the
                            // interface may still be there, so the DEL is not
                            // finished; the next start finishes it
                            tracing::warn!(link = %name, error = %e, "deferred teardown failed; start-up reconciliation will retry");
                        }
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

    /// Queues `host_ifname` for deletion; then the endpoint record of
    /// `forget`, if given, is forgotten.
    pub fn schedule(&self, host_ifname: String, forget: Option<Attachment>) {
        let (lock, _) = &*self.pending;
        lock.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host_ifname.clone());
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let job = Job {
            host_ifname: host_ifname.clone(),
            forget,
        };
        if tx.send(job).is_err() {
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

    pub fn is_pending(&self, host_ifname: &str) -> bool {
        let (lock, _) = &*self.pending;
        lock.lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(host_ifname)
    }

    pub fn pending(&self) -> usize {
        let (lock, _) = &*self.pending;
        lock.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
