//! Start-up reconciliation: finish the DELs a previous weftd began, make the
//! kernel match the endpoint table, and finish the DELs weft-cni spooled
//! while weftd was away.

use std::collections::HashSet;
use std::path::Path;

use weft_api::DelRequest;

use crate::agent::{alloc_attrs_of, link_of, Agent};
use crate::endpoint::Endpoint;
use crate::naming::{is_host_ifname, HOST_PREFIX};

/// What reconciliation did, for the log and for tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Endpoints whose DEL had begun (a weftd killed half-way through it):
    /// interface torn down, addresses released, record forgotten.
    pub finished_deletes: Vec<String>,
    /// Endpoints whose host routes or neighbours had to be put back.
    pub restored: Vec<String>,
    /// Endpoints whose network namespace is gone: released and forgotten.
    pub vanished: Vec<String>,
    /// Host veths of weft's shape with no endpoint: deleted.
    pub orphans_removed: Vec<String>,
    /// Problems that need a person.
    pub errors: Vec<String>,
}

/// Restores every endpoint's host side, forgets endpoints whose netns is gone
/// and removes orphan veths. Goes on past errors and reports all of them.
pub fn reconcile(agent: &Agent) -> ReconcileReport {
    let (finished_deletes, errors) = finish_deletes(agent);
    let mut report = ReconcileReport {
        finished_deletes,
        errors,
        ..ReconcileReport::default()
    };
    let mut known = HashSet::new();
    for ep in agent.endpoints().list() {
        let id = format!("{}/{}", ep.attachment.container_id, ep.attachment.ifname);
        if !Path::new(&ep.netns).exists() {
            // the container died while weftd was down; its DEL may still come
            // (and will succeed as a no-op)
            match agent.del(&DelRequest {
                attachment: ep.attachment.clone(),
                netns: String::new(),
                network: ep.network.clone(),
            }) {
                Ok(()) => report.vanished.push(id),
                Err(e) => report.errors.push(format!("{id}: {}", e.msg)),
            }
            continue;
        }
        known.insert(ep.host_ifname.clone());
        match agent.datapath().restore_host_side(&link_of(&ep), ep.mac) {
            Ok(true) => report.restored.push(id),
            Ok(false) => {}
            Err(e) => report.errors.push(format!("{id}: {e}")),
        }
    }
    match agent.datapath().list_host_links(HOST_PREFIX) {
        Ok(links) => {
            for link in links {
                if is_host_ifname(&link.name) && !known.contains(&link.name) {
                    match agent.datapath().detach(&link.name) {
                        Ok(()) => report.orphans_removed.push(link.name),
                        Err(e) => report.errors.push(format!("orphan {}: {e}", link.name)),
                    }
                }
            }
        }
        Err(e) => report.errors.push(format!("listing host links: {e}")),
    }
    report
}

fn id_of(ep: &Endpoint) -> String {
    format!("{}/{}", ep.attachment.container_id, ep.attachment.ifname)
}

/// Finishes every DEL that began and did not end (its record is marked
/// deleting): tears the interface down, releases the addresses, forgets the
/// record, in that order, so that whatever the runtime does next no address
/// is ever free in IPAM while a pod still holds it. Returns what was
/// finished and what could not be (left marked, retried later).
pub fn finish_deletes(agent: &Agent) -> (Vec<String>, Vec<String>) {
    let mut done = Vec::new();
    let mut errors = Vec::new();
    for ep in agent.endpoints().deleting() {
        let id = id_of(&ep);
        let _guard = agent.lock_container(&ep.attachment.container_id);
        let still = agent
            .endpoints()
            .deleting()
            .iter()
            .any(|d| d.attachment == ep.attachment);
        // finished or added again meanwhile, or queued: the teardown worker
        // finishes it (looked at under the lock, which a DEL holds until
        // it has queued its teardown)
        if !still || agent.teardown_pending(&ep.host_ifname) {
            continue;
        }
        if let Err(e) = agent.datapath().detach(&ep.host_ifname) {
            errors.push(format!("{id}: tearing down {}: {e}", ep.host_ifname));
            continue;
        }
        if let Err(e) = agent.ipam().release(&alloc_attrs_of(&ep).handle()) {
            errors.push(format!("{id}: releasing its addresses: {e}"));
            continue;
        }
        match agent.endpoints().remove(&ep.attachment) {
            Ok(_) => done.push(id),
            Err(e) => errors.push(format!("{id}: forgetting it: {e}")),
        }
    }
    (done, errors)
}

fn superseded(agent: &Agent, req: &DelRequest) -> bool {
    !req.netns.is_empty()
        && agent
            .endpoints()
            .get(&req.attachment)
            .is_some_and(|ep| ep.netns != req.netns)
}

/// Replays every DEL in the spool directory, removing each file once the DEL
/// is done. A file that cannot be parsed is renamed aside (`.bad`) so it is
/// never lost and never blocks the rest.
pub fn replay_spool(agent: &Agent, dir: &Path) -> (usize, Vec<String>) {
    let mut done = 0;
    let mut errors = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, errors);
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for path in files {
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<DelRequest>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(req) if superseded(agent, &req) => {
                // the attachment was added again, in another netns, after this
                // DEL was spooled: the DEL belongs to the old incarnation,
                // whose resources that ADD already replaced
                let _ = std::fs::remove_file(&path);
                tracing::info!(file = %path.display(), "dropped a spooled DEL of an attachment added again since");
            }
            Ok(req) => match agent.del(&req) {
                Ok(()) => {
                    done += 1;
                    if let Err(e) = std::fs::remove_file(&path) {
                        errors.push(format!("{}: replayed but not removed: {e}", path.display()));
                    }
                }
                Err(e) => errors.push(format!("{}: {}", path.display(), e.msg)),
            },
            Err(e) => {
                let aside = path.with_extension("json.bad");
                let _ = std::fs::rename(&path, &aside);
                errors.push(format!(
                    "{}: unreadable ({e}); moved to {}",
                    path.display(),
                    aside.display()
                ));
            }
        }
    }
    (done, errors)
}
