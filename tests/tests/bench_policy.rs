//! `weft bench policy` end to end at a tiny size: every case is built, its
//! rules are installed and checked to enforce (the bench refuses to measure
//! a case whose denied port answers), every metric comes back, the ratios
//! and weft's map memory are reported, and nothing the run made is left.

mod common;

use common::*;
use weft_bench::policy::{render_svg, render_table, run, PolicyBenchSpec};

#[test]
fn bench_policy_runs_every_case_and_cleans_up_privileged() {
    if !root_or_skip("bench_policy_runs_every_case_and_cleans_up_privileged") {
        return;
    }
    let name = lab_name("bp");
    let spec = PolicyBenchSpec {
        name: name.clone(),
        rules: vec![0, 20],
        rounds: 1,
        seconds: 1,
        echoes: 50,
        connects: 10,
    };
    let r = run(&spec, &mut |m| eprintln!("{m}")).expect("bench policy");
    let cases = ["raw veth", "none, kpath", "none, fast", "weft eBPF"];
    for n in [0, 20] {
        for c in cases.iter().chain(&[
            "weft eBPF, kpath",
            "iptables-legacy",
            "iptables-nft",
            "nftables sets",
        ]) {
            let row = r
                .cases
                .iter()
                .find(|x| x.rules == n && x.case == *c)
                .unwrap_or_else(|| panic!("no row for {c} at {n} rules"));
            assert!(row.rr_p50_us.median > 0.0, "{c}: {row:?}");
            assert!(row.crr_p50_us.median > 0.0, "{c}: {row:?}");
            assert!(row.gbps.median > 0.0, "{c}: {row:?}");
        }
    }
    let weft = r
        .ratios
        .iter()
        .find(|x| x.case == "weft eBPF" && x.rules == 20)
        .expect("weft's ratio at 20 rules");
    assert_eq!(weft.baseline, "none, fast");
    assert!(r.goal_met.is_some());
    let grew = r.map_memory.last().and_then(|m| m.bytes_per_rule);
    assert!(grew.is_some_and(|b| b > 0.0), "{:?}", r.map_memory);
    assert!(render_table(&r).contains("iptables-nft"));
    assert!(render_svg(&r).ends_with("</svg>\n"));
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&name))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left: {left:?}");
}
