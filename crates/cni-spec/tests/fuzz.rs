//! Fuzz-ish robustness: random bytes and mutated fixtures never panic any
//! parser. Deterministic (xorshift with fixed seeds) and bounded, so it runs
//! in the normal test suite.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use weft_cni_spec::{
    parse_result, render_add, version::sniff_cni_version, version_reply, CniArgs, CniEnv,
    CniVersion, Command, NetConf, NeutralResult,
};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"null",
    b"-1",
    b"1e999",
    b"0",
    b"\\u0000",
    b"\xff",
    b"\"ips\":",
    b"\"interface\":99",
    b"\"version\":\"4\"",
    b"\"mtu\":",
    b"18446744073709551616",
    b"\"cni.dev/valid-attachments\":",
    b"/",
    b"::",
    b"/129",
];

fn mutate(rng: &mut XorShift, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let pos = rng.below(out.len() + 1);
        match rng.below(5) {
            0 if !out.is_empty() => {
                let p = pos.min(out.len() - 1);
                out[p] = rng.next() as u8;
            }
            1 if !out.is_empty() => {
                let end = (pos + rng.below(16)).min(out.len());
                out.drain(pos.min(end)..end);
            }
            2 => {
                let ins = INTERESTING[rng.below(INTERESTING.len())];
                out.splice(pos..pos, ins.iter().copied());
            }
            3 if !out.is_empty() => {
                // duplicate a slice
                let start = rng.below(out.len());
                let end = (start + rng.below(32)).min(out.len());
                let chunk = out[start..end].to_vec();
                out.splice(pos..pos, chunk);
            }
            _ => out.truncate(pos),
        }
    }
    out
}

fn exercise(bytes: &[u8]) {
    let _ = sniff_cni_version(bytes);
    let _ = version_reply(bytes);
    if let Ok(c) = NetConf::parse(bytes) {
        for cmd in Command::ALL {
            let _ = c.check_for(cmd);
        }
        let _ = c.requested_ips();
        let _ = c.prev_result_neutral();
        let ours = NeutralResult::default();
        for v in CniVersion::ALL {
            let _ = render_add(&ours, v, c.prev_result.as_ref());
        }
    }
    if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
        if let Ok(r) = parse_result(&v, "x") {
            for ver in CniVersion::ALL {
                let _ = render_add(&r, ver, Some(&v));
            }
        }
        if let Some(p) = v.get("prevResult") {
            let _ = parse_result(p, "prevResult");
        }
    }
    let s = String::from_utf8_lossy(bytes);
    let _ = CniArgs::parse(&s);
    let mut env = HashMap::new();
    for (i, name) in [
        "CNI_CONTAINERID",
        "CNI_NETNS",
        "CNI_IFNAME",
        "CNI_ARGS",
        "CNI_PATH",
    ]
    .iter()
    .enumerate()
    {
        let part: String = s.chars().skip(i * 7).take(20).collect();
        env.insert(name.to_string(), part);
    }
    for cmd in Command::ALL {
        env.insert("CNI_COMMAND".into(), cmd.as_str().into());
        let _ = CniEnv::from_map(&env);
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3000 {
        let len = rng.below(300);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        exercise(&bytes);
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seeds: Vec<Vec<u8>> = Vec::new();
    for sub in [dir.clone(), dir.join("golden")] {
        for e in std::fs::read_dir(sub).unwrap().flatten() {
            if e.file_type().unwrap().is_file() {
                seeds.push(std::fs::read(e.path()).unwrap());
            }
        }
    }
    assert!(seeds.len() > 30);
    let mut rng = XorShift(0xD1B5_4A32_D192_ED03);
    for _ in 0..20_000 {
        let seed = &seeds[rng.below(seeds.len())];
        let m = mutate(&mut rng, seed);
        exercise(&m);
    }
}

#[test]
fn deep_nesting_does_not_overflow() {
    // serde_json's recursion limit turns this into an error, not a crash.
    let mut deep = br#"{"cniVersion":"1.0.0","name":"n","type":"weft-cni","x":"#.to_vec();
    deep.extend(std::iter::repeat_n(b'[', 100_000));
    exercise(&deep);
}
