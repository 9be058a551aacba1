//! The drift test and the encodings the kernel sees.

use std::collections::HashMap;
use std::process::Command;

use weft_bpf::{bytes_of, from_bytes};

use super::*;

/// Compiles [`PROBE_C`] (a program including every header) with the host C
/// compiler and compares each size, offset and constant it prints with the
/// generated Rust. A generator that misread the header, or a Rust type
/// edited by hand, fails here before any kernel sees a misread map.
#[test]
fn layout_drift() {
    let dir = std::env::temp_dir().join(format!("weft-abi-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let probe = dir.join("probe.c");
    std::fs::write(&probe, PROBE_C).unwrap();
    let exe = dir.join("probe");
    let cc = Command::new("cc")
        .arg("-I")
        .arg(INCLUDE_DIR)
        .arg("-o")
        .arg(&exe)
        .arg(&probe)
        .status()
        .expect("a C compiler (cc) runs the layout probe; scripts/setup.sh installs one");
    assert!(cc.success(), "the layout probe did not compile");
    let out = Command::new(&exe).output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let text = String::from_utf8(out.stdout).unwrap();
    let c: HashMap<&str, i64> = text
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect();
    for (name, rust) in LAYOUT {
        assert_eq!(c.get(name), Some(rust), "{name}: C says {:?}", c.get(name));
    }
    assert_eq!(
        c.len(),
        LAYOUT.len(),
        "the probe printed something unchecked"
    );
    // the rows cover what the programs and weftd share
    for key in [
        "weft_ep_key size",
        "weft_ep_value.flags",
        "weft_cidr_key.addr",
        "weft_config size",
        "weft_map_def size",
        "WEFT_STAT_MAX",
        "WEFT_EP_FAST",
        "WEFT_TCX_NEXT",
        "weft_flow_event size",
        "weft_flow_event.rule_id",
        "WEFT_DROP_MAX",
        "WEFT_DROP_POLICY_DEFAULT",
        "WEFT_POLICY_DEFAULT_DENY",
        "WEFT_VERDICT_DROPPED",
    ] {
        assert!(c.contains_key(key), "{key} is not in the probe");
    }
}

#[test]
fn encodings() {
    let k = EpKey::new("10.1.2.3".parse().unwrap());
    let b = bytes_of(&k);
    assert_eq!(&b[..8], &[4, 0, 0, 0, 10, 1, 2, 3]);
    assert!(b[8..].iter().all(|&x| x == 0));
    assert_eq!(from_bytes::<EpKey>(b), Some(k));
    let k6 = EpKey::new("fd00::1".parse().unwrap());
    assert_eq!(from_bytes::<EpKey>(bytes_of(&k6)), Some(k6));
    assert_eq!(from_bytes::<EpKey>(&[0; 19]), None);

    let v = EpValue {
        host_ifindex: 7,
        pod_mac: [1, 2, 3, 4, 5, 6],
        flags: EP_FAST,
        pad: 0,
    };
    assert_eq!(from_bytes::<EpValue>(bytes_of(&v)), Some(v));
    assert_eq!(&bytes_of(&v)[..4], &7u32.to_ne_bytes());
    assert_eq!(&bytes_of(&v)[4..11], &[1, 2, 3, 4, 5, 6, EP_FAST]);

    let c = CidrKey::new("10.244.0.0/16".parse().unwrap());
    assert_eq!(c.prefixlen, 48);
    let c6 = CidrKey::new("fd00:244::/48".parse().unwrap());
    assert_eq!(c6.prefixlen, 80);
    assert_eq!(bytes_of(&c6)[4], AF_INET6);
}

#[test]
fn counters_follow_the_enum() {
    assert_eq!(STAT_NAMES.len(), STAT_MAX as usize);
    assert_eq!(
        STAT_NAMES[STAT_PASS_SLOW_ENDPOINT as usize],
        "pass_slow_endpoint"
    );
    let mut s = Stats::default();
    s.add(STAT_REMOTE as usize, 3);
    s.add(STAT_MAX as usize, 9); // out of range: ignored
    assert_eq!(s.remote, 3);
    assert_eq!(s.pairs()[1], ("remote", 3));
    assert_eq!(Stats::from_slots(s.slots()), s);
}
