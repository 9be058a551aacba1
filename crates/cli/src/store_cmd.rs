//! `weft store migrate --from etcd --to kubernetes` (or the reverse): makes
//! the target store hold exactly the source's durable keys (IPAM pools,
//! blocks, route summaries, anything else that is not a node
//! registration), so weftds restarted on the target keep every pod's
//! address.
//!
//! # Why it cannot lose an allocation
//!
//! An allocation is lost when a weftd writes it to the source after the
//! copy read it. So the copy runs only while no weftd runs on either store:
//!
//! 1. every weftd registers its node under `/weft/cluster/v1/nodes/` (or,
//!    on the Kubernetes store, its presence under `/weft/agents/v1/`) on a
//!    lease it renews; a registration in the source or the target is a
//!    live weftd (or one stopped less than a lease ago): refuse;
//! 2. then the source is fenced ([`MIGRATION_FENCE_KEY`]): a weftd that
//!    starts on it from now on refuses to run, so none can join later;
//! 3. the registrations are checked again after the fence (one that
//!    started between 1 and 2), the keys copied, and checked once more
//!    after the copy; any registration fails the run, which is safe to
//!    repeat once that weftd is stopped. A weftd checks the fence after
//!    each of its registrations, its first and any after a lost lease:
//!    either this check sees its registration, or it sees the fence and
//!    exits (see the agent's `registry::start_registration`).
//!
//! Running it twice is safe: the fence is written again, keys already
//! equal are left alone, and the target's fence (from a migration the
//! other way) is removed last, when the target holds the source's state.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use weft_store::{Store, TxnOp, AGENTS_PREFIX, MIGRATION_FENCE_KEY, NODES_PREFIX};

use crate::output::outln;
use crate::Format;

#[derive(Subcommand)]
pub enum StoreCmd {
    /// Copy the cluster's state between datastores (every weftd stopped).
    Migrate(MigrateArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub enum Backend {
    Etcd,
    Kubernetes,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Etcd => "etcd",
            Backend::Kubernetes => "kubernetes",
        }
    }
}

#[derive(Args)]
pub struct MigrateArgs {
    #[arg(long, value_enum)]
    pub from: Backend,
    #[arg(long, value_enum)]
    pub to: Backend,
    /// etcd client URLs, comma-separated.
    #[arg(long, env = "WEFT_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// kubeconfig of the API server (default: kubectl's inference).
    #[arg(long, env = "WEFT_KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The store's name (weftd's --kube-store).
    #[arg(long, default_value = "weft")]
    pub kube_store: String,
    /// The namespace of its Leases (weftd's --kube-store-namespace).
    #[arg(long, default_value = "weft-system")]
    pub kube_store_namespace: String,
}

fn open(b: Backend, a: &MigrateArgs) -> anyhow::Result<Box<dyn Store>> {
    Ok(match b {
        Backend::Etcd => {
            if a.etcd_endpoints.is_empty() {
                bail!("--from/--to etcd needs --etcd-endpoints http://HOST:2379[,...]");
            }
            Box::new(
                weft_store::etcd::EtcdStore::connect(&a.etcd_endpoints, Default::default())
                    .context("connecting to etcd")?,
            )
        }
        Backend::Kubernetes => {
            let source = match &a.kubeconfig {
                Some(p) => weft_k8s::Source::Kubeconfig(p.clone()),
                None => weft_k8s::Source::Infer,
            };
            let mut cfg = weft_k8s::store::KubeStoreConfig::new(source);
            cfg.name = a.kube_store.clone();
            cfg.namespace = a.kube_store_namespace.clone();
            // the reaper ends expired registrations: a stopped weftd's goes
            cfg.reap_every = Duration::from_secs(1);
            let store = weft_k8s::store::KubeStore::connect(cfg)
                .context("connecting to the Kubernetes API")?;
            // a stopped weftd's registration ends when its lease expired,
            // but only a reaper deletes it, and none runs while every weftd
            // is stopped
            store
                .reap_now()
                .context("ending expired leases in the Kubernetes store")?;
            Box::new(store)
        }
    })
}

pub fn run(cmd: StoreCmd, format: Format) -> anyhow::Result<ExitCode> {
    let StoreCmd::Migrate(a) = cmd;
    if a.from == a.to {
        bail!(
            "--from and --to are both {}: nothing to migrate",
            a.from.name()
        );
    }
    let from = open(a.from, &a)?;
    let to = open(a.to, &a)?;
    let r = migrate(&*from, &*to, a.to.name())?;
    match format {
        Format::Json | Format::Jsonpb => outln!(
            "{}",
            serde_json::json!({"from": a.from.name(), "to": a.to.name(), "copied": r.copied,
                "unchanged": r.unchanged, "removed": r.removed})
        ),
        Format::Table | Format::Compact => outln!(
            "migrated {} -> {}: {} keys copied, {} already there, {} stale removed; \
             start every weftd with --store {}",
            a.from.name(),
            a.to.name(),
            r.copied,
            r.unchanged,
            r.removed,
            a.to.name()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub copied: usize,
    pub unchanged: usize,
    pub removed: usize,
}

/// Refuses while a weftd is registered in `store`: a node registration,
/// or (`--store kubernetes`, whose node facts are on the Node objects) a
/// weftd's presence.
fn no_weftd(store: &dyn Store, which: &str) -> anyhow::Result<()> {
    let mut names = Vec::new();
    for prefix in [NODES_PREFIX, AGENTS_PREFIX] {
        for kv in store.list(prefix)?.kvs {
            names.push(kv.key.trim_start_matches(prefix).to_string());
        }
    }
    if !names.is_empty() {
        bail!(
            "weftd still registered in the {which} store ({}): stop every weftd first \
             (a stopped one's registration ends with its lease, --node-lease-seconds), then run again",
            names.join(", ")
        );
    }
    Ok(())
}

/// Makes `to` hold `from`'s durable keys; see the module docs.
pub fn migrate(from: &dyn Store, to: &dyn Store, to_name: &str) -> anyhow::Result<Report> {
    no_weftd(from, "source")?;
    no_weftd(to, "target")?;
    let fence = serde_json::json!({ "moved_to": to_name }).to_string();
    from.commit(&[TxnOp::Put {
        key: MIGRATION_FENCE_KEY,
        value: fence.as_bytes(),
    }])?
    .map_err(|c| anyhow::anyhow!("cannot fence the source store: {c:?}"))?;
    no_weftd(from, "source")?;

    let durable = |kv: &weft_store::KeyValue| kv.lease.is_none() && kv.key != MIGRATION_FENCE_KEY;
    let source: Vec<_> = from.list("")?.kvs.into_iter().filter(durable).collect();
    let target = to.list("")?.kvs;
    let mut r = Report::default();
    for kv in &source {
        let current = target.iter().find(|t| t.key == kv.key);
        let op = match current {
            Some(t) if t.value == kv.value => {
                r.unchanged += 1;
                continue;
            }
            Some(t) => TxnOp::Update {
                key: &kv.key,
                value: &kv.value,
                expected: t.mod_revision,
            },
            None => TxnOp::Create {
                key: &kv.key,
                value: &kv.value,
                lease: None,
            },
        };
        to.commit(&[op])?.map_err(|c| {
            anyhow::anyhow!(
                "{} changed in the target while copying ({c:?}): is a weftd running on it?",
                kv.key
            )
        })?;
        r.copied += 1;
    }
    for t in target.iter().filter(|t| durable(t)) {
        if !source.iter().any(|kv| kv.key == t.key) {
            to.delete(&t.key, Some(t.mod_revision))?.map_err(|_| {
                anyhow::anyhow!(
                    "{} changed in the target while copying: is a weftd running on it?",
                    t.key
                )
            })?;
            r.removed += 1;
        }
    }
    no_weftd(from, "source")?;
    no_weftd(to, "target")?;
    // the target is the cluster's store again (it may be fenced by a
    // migration the other way)
    to.delete(MIGRATION_FENCE_KEY, None)?
        .map_err(|c| anyhow::anyhow!("cannot unfence the target: {c:?}"))?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_store::embedded::EmbeddedStore;

    fn put(s: &dyn Store, k: &str, v: &str) {
        s.commit(&[TxnOp::Put {
            key: k,
            value: v.as_bytes(),
        }])
        .unwrap()
        .unwrap();
    }

    #[test]
    fn copies_durable_keys_fences_the_source_and_runs_twice() {
        let (a, b) = (EmbeddedStore::in_memory(), EmbeddedStore::in_memory());
        put(&a, "/weft/ipam/v1/blocks/x", "1");
        put(&a, "/weft/cluster/v1/routes/x", "r");
        put(&b, "/weft/ipam/v1/blocks/stale", "0");
        let r = migrate(&a, &b, "kubernetes").unwrap();
        assert_eq!(
            r,
            Report {
                copied: 2,
                unchanged: 0,
                removed: 1
            }
        );
        assert_eq!(
            b.get("/weft/ipam/v1/blocks/x").unwrap().unwrap().value,
            b"1"
        );
        assert!(b.get("/weft/ipam/v1/blocks/stale").unwrap().is_none());
        assert!(a.get(MIGRATION_FENCE_KEY).unwrap().is_some());
        let again = migrate(&a, &b, "kubernetes").unwrap();
        assert_eq!(
            again,
            Report {
                copied: 0,
                unchanged: 2,
                removed: 0
            }
        );
        // and back: the old source is unfenced, its keys follow the other
        put(&b, "/weft/ipam/v1/blocks/x", "2");
        let back = migrate(&b, &a, "etcd").unwrap();
        assert_eq!(
            back,
            Report {
                copied: 1,
                unchanged: 1,
                removed: 0
            }
        );
        assert!(a.get(MIGRATION_FENCE_KEY).unwrap().is_none());
        assert!(b.get(MIGRATION_FENCE_KEY).unwrap().is_some());
    }

    #[test]
    fn refuses_while_a_weftd_is_registered() {
        let (a, b) = (EmbeddedStore::in_memory(), EmbeddedStore::in_memory());
        put(&a, "/weft/ipam/v1/blocks/x", "1");
        let lease = a.grant_lease(Duration::from_secs(30)).unwrap();
        a.create(&format!("{NODES_PREFIX}n1"), b"{}", Some(lease))
            .unwrap()
            .unwrap();
        let e = migrate(&a, &b, "kubernetes").unwrap_err().to_string();
        assert!(e.contains("n1") && e.contains("stop every weftd"), "{e}");
        assert!(
            a.get(MIGRATION_FENCE_KEY).unwrap().is_none(),
            "nothing done"
        );
        assert!(b.list("").unwrap().kvs.is_empty());
        a.revoke_lease(lease).unwrap();
        let lease = b.grant_lease(Duration::from_secs(30)).unwrap();
        b.create(&format!("{NODES_PREFIX}n2"), b"{}", Some(lease))
            .unwrap()
            .unwrap();
        assert!(migrate(&a, &b, "kubernetes")
            .unwrap_err()
            .to_string()
            .contains("target"));
        // a weftd on the Kubernetes store registers its presence only
        b.revoke_lease(lease).unwrap();
        let lease = b.grant_lease(Duration::from_secs(30)).unwrap();
        b.create(&format!("{AGENTS_PREFIX}n3"), b"{}", Some(lease))
            .unwrap()
            .unwrap();
        let e = migrate(&a, &b, "kubernetes").unwrap_err().to_string();
        assert!(e.contains("n3") && e.contains("target"), "{e}");
    }
}
