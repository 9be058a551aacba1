//! Compile time at scale. The guard against superlinear growth is the
//! unit test `compile::scale_tests` (it counts work, not time); this file
//! measures, ignored by default:
//! `cargo test --release -p weft-policy --test scale -- --ignored --nocapture`.

mod scale_gen;

use std::time::Instant;

use weft_policy::*;

fn time(label: &str, (policies, inventory): (Vec<NetworkPolicy>, Inventory)) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let c = compile(&policies, &inventory, &mut MemoryAllocator::new()).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
        assert!(c.rejected.is_empty());
    }
    println!("{label}: {:.1} ms (best of 3)", best * 1e3);
    best
}

#[test]
#[ignore = "a measurement: run with --release --ignored --nocapture"]
fn compile_time_at_1k_and_10k() {
    let d1 = time("bench layout, 1k policies", scale_gen::decoys(1_000));
    let d10 = time("bench layout, 10k policies", scale_gen::decoys(10_000));
    let c1 = time(
        "cluster, 1k policies over 1k pods",
        scale_gen::cluster(1_000, 1_000),
    );
    let c10 = time(
        "cluster, 10k policies over 1k pods",
        scale_gen::cluster(10_000, 1_000),
    );
    let p10 = time(
        "cluster, 1k policies over 10k pods",
        scale_gen::cluster(1_000, 10_000),
    );
    println!(
        "ratios 10k/1k: bench layout {:.1}x, cluster policies {:.1}x, cluster pods {:.1}x",
        d10 / d1,
        c10 / c1,
        p10 / c1
    );
}
