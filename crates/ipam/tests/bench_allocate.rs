//! Rough numbers for IPAM over the embedded store on disk, not a timed
//! assertion:
//!
//! ```text
//! cargo test --release -p weft-ipam --test bench_allocate -- --ignored --nocapture
//! ```
//!
//! The store log goes under `$WEFT_STORE_BENCH_DIR` (default: the system temp
//! dir), so the disk being measured can be chosen.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weft_ipam::{AllocRequest, AllocationAttrs, Ipam, IpamConfig, PoolConfig, SystemClock};
use weft_store::embedded::EmbeddedStore;

/// A directory removed (with its content) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let base = std::env::var_os("WEFT_STORE_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = base.join(format!("weft-ipam-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

fn attrs(i: usize) -> AllocationAttrs {
    AllocationAttrs {
        container_id: format!("{i:064x}"),
        ifname: "eth0".into(),
        pod_namespace: "default".into(),
        pod_name: format!("nginx-7c5ddbdf54-{i:05}"),
    }
}

fn report(what: &str, mut lat: Vec<Duration>) {
    lat.sort();
    println!(
        "{what}: n {}, p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        lat[lat.len() - 1]
    );
}

#[test]
#[ignore = "measurement, run by hand"]
fn dual_stack_allocate_latency() {
    let dir = TempDir::new();
    let store = Arc::new(EmbeddedStore::open(&dir.0.join("store.log")).expect("open store"));
    run(store);
}

/// The same against the in-memory store: what is left without the disk.
#[test]
#[ignore = "measurement, run by hand"]
fn dual_stack_allocate_cpu() {
    run(Arc::new(EmbeddedStore::in_memory()));
}

fn run(store: Arc<EmbeddedStore>) {
    let cfg = IpamConfig::new(
        "node-1",
        vec![
            PoolConfig::new("10.244.0.0/16".parse().expect("cidr")),
            PoolConfig::new("fd00:10:244::/56".parse().expect("cidr")),
        ],
    );
    let ipam = Ipam::new(store.clone(), cfg, Arc::new(SystemClock)).expect("ipam");
    let req = AllocRequest {
        ipv4: true,
        ipv6: true,
        requested: vec![],
    };
    // Warm up: claim the first blocks, so the run measures the steady state
    // (a block claim, one in 63 allocations, adds a list).
    let n = 500;
    for i in 0..8 {
        ipam.allocate(&attrs(1_000_000 + i), &req).expect("warm-up");
    }
    let mut alloc = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let got = ipam.allocate(&attrs(i), &req).expect("allocate");
        alloc.push(t.elapsed());
        assert_eq!(got.len(), 2);
    }
    let mut release = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let got = ipam
            .release(&weft_ipam::handle(&attrs(i).container_id, "eth0"))
            .expect("release");
        release.push(t.elapsed());
        assert_eq!(got.len(), 2);
    }
    report("dual-stack allocate", alloc);
    report("dual-stack release", release);
    println!("fsyncs: {}", store.fsync_count());
}
