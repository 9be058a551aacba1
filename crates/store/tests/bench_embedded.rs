//! Rough numbers for the embedded backend, not a timed assertion:
//!
//! ```text
//! cargo test --release -p weft-store --test bench_embedded -- --ignored --nocapture
//! ```
//!
//! The log goes under `$WEFT_STORE_BENCH_DIR` (default: the system temp dir),
//! so the disk being measured can be chosen.

mod common;

use std::time::{Duration, Instant};

use common::TempDir;
use weft_store::embedded::EmbeddedStore;
use weft_store::Store;

fn bench_dir() -> TempDir {
    match std::env::var_os("WEFT_STORE_BENCH_DIR") {
        Some(d) => TempDir::new_in(std::path::Path::new(&d), "bench"),
        None => TempDir::new("bench"),
    }
}

fn value() -> Vec<u8> {
    // About the size of an IPAM allocation record.
    br#"{"container_id":"0123456789abcdef0123456789abcdef","ifname":"eth0","pod":"default/nginx-7c5ddbdf54-abcde","node":"node-1"}"#.to_vec()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

#[test]
#[ignore = "measurement, run by hand"]
fn measure() {
    let dir = bench_dir();
    let s = EmbeddedStore::open(&dir.file("store.log")).expect("open");
    let v = value();

    // Single writer: latency of one durable create.
    let n = 300;
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        s.create(&format!("single/{i}"), &v, None)
            .expect("create")
            .expect("ok");
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "single writer: {n} creates, p50 {:?}, p99 {:?}, max {:?}",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[n - 1]
    );

    for threads in [4usize, 16] {
        let per = 100;
        let f0 = s.fsync_count();
        let t = Instant::now();
        std::thread::scope(|scope| {
            for th in 0..threads {
                let (s, v) = (&s, &v);
                scope.spawn(move || {
                    for i in 0..per {
                        s.create(&format!("multi{threads}/{th}/{i}"), v, None)
                            .expect("create")
                            .expect("ok");
                    }
                });
            }
        });
        let el = t.elapsed();
        let writes = (threads * per) as f64;
        let fsyncs = (s.fsync_count() - f0) as f64;
        println!(
            "{threads} writers: {writes} creates in {el:?}: {:.0} writes/s, {:.3} fsyncs per write",
            writes / el.as_secs_f64(),
            fsyncs / writes
        );
    }

    let t = Instant::now();
    let reads = 100_000;
    for i in 0..reads {
        s.get(&format!("single/{}", i % n)).expect("get");
    }
    println!(
        "get: {:.0} reads/s",
        reads as f64 / t.elapsed().as_secs_f64()
    );

    let m = EmbeddedStore::in_memory();
    let t = Instant::now();
    for i in 0..100_000 {
        m.create(&format!("mem/{i}"), &v, None)
            .expect("create")
            .expect("ok");
    }
    println!(
        "in memory: {:.0} creates/s",
        100_000.0 / t.elapsed().as_secs_f64()
    );
}
