//! `--store kubernetes` against the lab's real API server: the whole store
//! conformance suite (the same checks the embedded and etcd backends pass),
//! each check on a `WeftStore` object of its own, from a lab node's network
//! namespace (the API server listens only inside the lab).

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use weft_k8s::store::{KubeStore, KubeStoreConfig};
use weft_k8s::Source;
use weft_lab::kube::KubeSpec;
use weft_lab::{Lab, LabSpec};
use weft_store::conformance;

/// Checks run at once (each on its own object, so they do not interfere).
const PARALLEL: usize = 4;
/// The whole suite's bound on a loaded 2-CPU machine.
const SUITE_LIMIT: Duration = Duration::from_secs(300);

/// Where the store's CRDs are.
pub fn crd_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/kubernetes/crds/store"
    ))
}

/// Installs weft's store CRDs and waits until the API serves them: one
/// apply and one wait for all of them (a kubectl per CRD and step cost
/// seconds of the test on a loaded machine).
pub fn install_store_crd(lab: &Lab) {
    let dir = crd_dir();
    let kinds = [
        "weftstores",
        "ippools",
        "ipamblocks",
        "weftnodes",
        "securityidentities",
        "weftrecords",
    ];
    let files: Vec<String> = kinds
        .iter()
        .map(|f| dir.join(format!("{f}.yaml")).display().to_string())
        .collect();
    let mut apply = vec!["apply"];
    for f in &files {
        apply.extend(["-f", f.as_str()]);
    }
    let o = lab.kubectl(&apply).expect("kubectl runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let crds: Vec<String> = kinds.iter().map(|f| format!("crd/{f}.weft.dev")).collect();
    let mut wait = vec!["wait", "--for=condition=established", "--timeout=60s"];
    wait.extend(crds.iter().map(String::as_str));
    let o = lab.kubectl(&wait).expect("kubectl runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The checks, the long ones first: many threads contending for one key
/// (tens of seconds each on the API server). Started last, as listed,
/// they ran after the short ones on three workers while the fourth idled;
/// started first, the short ones fill the remaining worker around them.
fn longest_first<T>(mut checks: Vec<(&'static str, T)>) -> Vec<(&'static str, T)> {
    checks.sort_by_key(|(name, _)| {
        !(name.starts_with("concurrent_") || name.contains("concurrent_writes"))
    });
    checks
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

#[test]
fn kube_store_passes_the_store_conformance_suite_privileged() {
    if !root_or_skip("kube_store_passes_the_store_conformance_suite_privileged") {
        return;
    }
    let mut spec = LabSpec::new(&lab_name("ks"), &bin_dir());
    spec.nodes = 1;
    spec.kubernetes = Some(KubeSpec {
        ready_timeout: Duration::from_secs(180),
        ..KubeSpec::default()
    });
    let lab = LabGuard(Lab::up(&spec, &mut |l| eprintln!("{l}")).expect("lab up --kubernetes"));
    install_store_crd(&lab);
    let kubeconfig = lab.kube().expect("a cluster").admin_kubeconfig.clone();
    let netns = lab.nodes()[0].netns.clone();

    let seq = AtomicUsize::new(0);
    let fresh = || {
        let mut cfg = KubeStoreConfig::new(Source::Kubeconfig(kubeconfig.clone()));
        cfg.name = format!(
            "conf-{}-{}",
            std::process::id(),
            seq.fetch_add(1, Ordering::Relaxed)
        );
        cfg.namespace = "default".into();
        cfg.reap_every = Duration::from_millis(250);
        KubeStore::connect(cfg).expect("store client")
    };
    type F<'a> = &'a (dyn Fn() -> KubeStore + Sync);
    let checks = longest_first(conformance::checks::<KubeStore, F<'_>>());
    let failures = Mutex::new(Vec::new());
    let started = Instant::now();
    // the store's threads inherit the node's namespace from this one
    weft_datapath::netns::run_in(&netns, || {
        let queue = Mutex::new(checks.into_iter());
        let fresh: F<'_> = &fresh;
        std::thread::scope(|scope| {
            for _ in 0..PARALLEL {
                scope.spawn(|| loop {
                    let next = queue.lock().unwrap().next();
                    let Some((name, check)) = next else { break };
                    if started.elapsed() > SUITE_LIMIT {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{name}: not run, suite over {SUITE_LIMIT:?}"));
                        continue;
                    }
                    let t = Instant::now();
                    let r = catch_unwind(AssertUnwindSafe(|| check(&fresh)));
                    eprintln!(
                        "{name}: {:?} {}",
                        t.elapsed(),
                        if r.is_ok() { "ok" } else { "FAILED" }
                    );
                    if let Err(p) = r {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{name}: {}", panic_message(&*p)));
                    }
                });
            }
        });
    })
    .expect("enter the node's namespace");
    // write latency, for the record: 100 sequential compare-and-swaps of
    // one key from one client (no contention), each a PUT of the document
    let mut lat = weft_datapath::netns::run_in(&netns, || {
        use weft_store::Store;
        let s = fresh();
        let mut rev = s.create("bench/k", b"0", None).unwrap().unwrap();
        (0..100)
            .map(|i| {
                let t = Instant::now();
                rev = s
                    .update("bench/k", format!("{i}").as_bytes(), rev)
                    .unwrap()
                    .unwrap();
                t.elapsed()
            })
            .collect::<Vec<_>>()
    })
    .expect("enter the node's namespace");
    lat.sort();
    eprintln!(
        "kubernetes store write latency over 100 sequential updates: p50 {:?}, p90 {:?}, max {:?}",
        lat[50], lat[90], lat[99]
    );
    let big = weft_datapath::netns::run_in(&netns, || more_than_one_object_held(&fresh))
        .expect("enter the node's namespace");
    let name = format!("{big}.10.0.0.0-26");
    let table = lab
        .kubectl(&["get", "ipamblocks", "-l", &format!("weft.dev/store={big}")])
        .expect("kubectl runs");
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    eprintln!("{}", table.lines().take(4).collect::<Vec<_>>().join("\n"));
    let row = table.lines().find(|l| l.starts_with(&name)).unwrap_or("");
    assert!(
        table.starts_with("NAME") && table.contains("CIDR") && table.contains("USED"),
        "{table}"
    );
    assert!(
        row.contains("10.0.0.0/26") && row.contains(" n0 ") && row.contains(" 64 "),
        "{row}"
    );
    moves_a_single_object_store(&lab, &netns, &kubeconfig);
    let failures = failures.into_inner().unwrap();
    eprintln!("suite: {:?}", started.elapsed());
    assert!(
        failures.is_empty(),
        "failed checks:\n{}",
        failures.join("\n")
    );
}

/// How many full blocks the size check writes: their records alone are
/// well over etcd's 1.5 MiB request limit, which bounded the single-object
/// layout to ~100.
const BIG_BLOCKS: usize = 300;

/// A full /26's record as IPAM writes it (64 allocations with 64-character
/// container ids, ~10 KB).
fn full_block(i: usize) -> (String, String, Vec<u8>) {
    let cidr = format!("10.0.{}.{}/26", i / 4, (i % 4) * 64);
    let esc = cidr.replace('/', "-");
    let allocs: serde_json::Map<String, serde_json::Value> = (0..64)
        .map(|o| {
            let id = format!("{:064x}", i * 64 + o);
            let v = serde_json::json!({"c": id, "ns": "default", "n": format!("pod-{i}-{o}")});
            (o.to_string(), v)
        })
        .collect();
    let rec = serde_json::json!({"cidr": cidr, "pool": "10.0.0.0/16",
        "affinity": format!("n{}", i % 3), "allocations": allocs, "next": 0});
    (
        format!("/weft/ipam/v1/blocks/{esc}"),
        format!("/weft/cluster/v1/routes/{esc}"),
        serde_json::to_vec(&rec).unwrap(),
    )
}

/// Fills a store with [`BIG_BLOCKS`] full blocks, two blocks and their
/// route summaries per commit (each commit spans objects), and reads them
/// back in one listing. Returns the store's name.
fn more_than_one_object_held(fresh: &(dyn Fn() -> KubeStore + Sync)) -> String {
    use weft_store::{Store, TxnOp};
    let s = fresh();
    let started = Instant::now();
    let mut bytes = 0;
    for pair in (0..BIG_BLOCKS).collect::<Vec<_>>().chunks(2) {
        let blocks: Vec<_> = pair.iter().map(|i| full_block(*i)).collect();
        let ops: Vec<TxnOp<'_>> = blocks
            .iter()
            .flat_map(|(key, route, value)| {
                [
                    TxnOp::Create {
                        key,
                        value,
                        lease: None,
                    },
                    TxnOp::Put {
                        key: route,
                        value: b"{}",
                    },
                ]
            })
            .collect();
        bytes += blocks.iter().map(|b| b.2.len()).sum::<usize>();
        s.commit(&ops).expect("store up").expect("no conflict");
    }
    eprintln!(
        "{BIG_BLOCKS} full blocks ({} KiB) written in {:?}",
        bytes / 1024,
        started.elapsed()
    );
    assert!(bytes > 3 << 19, "more than etcd's request limit: {bytes}");
    let l = s.list("/weft/ipam/v1/blocks/").expect("list");
    assert_eq!(l.kvs.len(), BIG_BLOCKS);
    let revs: std::collections::BTreeSet<_> = l.kvs.iter().map(|kv| kv.mod_revision).collect();
    assert_eq!(
        revs.len(),
        BIG_BLOCKS / 2,
        "one revision per commit of two blocks"
    );
    assert_eq!(l.kvs[0].value, full_block(0).2);
    let routes = s.list("/weft/cluster/v1/routes/").expect("list");
    assert_eq!(routes.kvs.len(), BIG_BLOCKS);
    // a commit that spans two full blocks' objects still conflicts whole
    let (k0, _, v0) = full_block(0);
    let (k1, _, v1) = full_block(1);
    let rev_of = |k: &str| {
        l.kvs
            .iter()
            .find(|kv| kv.key == k)
            .expect("listed")
            .mod_revision
    };
    let stale = rev_of(&k0) - 1;
    let c = s
        .commit(&[
            TxnOp::Update {
                key: &k1,
                value: &v1,
                expected: rev_of(&k1),
            },
            TxnOp::Update {
                key: &k0,
                value: &v0,
                expected: stale,
            },
        ])
        .expect("store up");
    assert!(c.is_err(), "a stale condition fails the commit");
    assert_eq!(s.get(&k1).unwrap().unwrap().mod_revision, rev_of(&k1));
    s.name().to_string()
}

/// A store of the single-object layout (every key in the `WeftStore`'s
/// `spec.entries`, as weft wrote it before) is moved into per-kind objects
/// by the first client that reads it: values, revisions and leases kept.
fn moves_a_single_object_store(lab: &Lab, netns: &std::path::Path, kubeconfig: &std::path::Path) {
    use weft_store::Store;
    let name = format!("old-{}", std::process::id());
    let old = serde_json::json!({"apiVersion": "weft.dev/v1alpha1", "kind": "WeftStore",
        "metadata": {"name": name},
        "spec": {"keys": 3, "last": [{"k": "/weft/ipam/v1/pools/10.9.0.0-16"}], "entries": {
            "/weft/ipam/v1/pools/10.9.0.0-16": {"v": "{\"cidr\":\"10.9.0.0/16\",\"block_prefix\":26}", "c": 5, "m": 7},
            "/weft/ipam/v1/blocks/10.9.0.0-26": {"v": "{\"cidr\":\"10.9.0.0/26\",\"pool\":\"10.9.0.0/16\",\"affinity\":\"n1\",\"allocations\":{\"3\":{}}}", "c": 6},
            "other/raw": {"b": "/wA="}}}});
    let o = lab
        .kubectl_as(
            kubeconfig,
            &["apply", "-f", "-"],
            Some(old.to_string().as_bytes()),
        )
        .expect("kubectl runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (pool, block, raw, listed) = weft_datapath::netns::run_in(netns, || {
        let mut cfg = KubeStoreConfig::new(Source::Kubeconfig(kubeconfig.to_path_buf()));
        cfg.name = name.clone();
        cfg.namespace = "default".into();
        let s = KubeStore::connect(cfg).expect("store client");
        let pool = s.get("/weft/ipam/v1/pools/10.9.0.0-16").unwrap().unwrap();
        let block = s.get("/weft/ipam/v1/blocks/10.9.0.0-26").unwrap().unwrap();
        let raw = s.get("other/raw").unwrap().unwrap();
        (pool, block, raw, s.list("").unwrap())
    })
    .expect("enter the node's namespace");
    assert_eq!((pool.create_revision, pool.mod_revision), (5, 7));
    assert_eq!(block.create_revision, 6);
    assert!(
        block.mod_revision > 7,
        "the old document's revision: {block:?}"
    );
    assert_eq!(raw.value, vec![0xff, 0]);
    assert_eq!(listed.kvs.len(), 3);
    let o = lab
        .kubectl_as(
            kubeconfig,
            &["get", "ipamblocks", &format!("{name}.10.9.0.0-26")],
            None,
        )
        .expect("kubectl runs");
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("10.9.0.0/26") && table.contains(" n1 "),
        "{table}"
    );
    let o = lab
        .kubectl_as(
            kubeconfig,
            &["get", "weftstore", &name, "-o", "jsonpath={.spec.layout}"],
            None,
        )
        .expect("kubectl runs");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "objects");
}
