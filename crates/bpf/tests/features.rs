//! Privileged tests of the loader's newer parts against the real kernel, with
//! no namespace, device or route: BPF_PROG_TEST_RUN, the ring buffer reader,
//! pinned maps in a private bpffs (unmounted on drop), and cgroup attach to
//! a cgroup made and removed here. Without root they skip loudly.

mod common;

use std::path::{Path, PathBuf};

use common::clang::compile_bpf_code;
use weft_bpf::{
    self as bpf, LoadOptions, PerCpuArray, PinOutcome, PrivateBpffs, ProgKind, RingBuf, SkbCtx,
    TypedMap,
};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ring_emit.c");

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! need_root {
    ($name:expr) => {
        if !is_root() {
            println!("skipping {}: needs root", $name);
            return;
        }
    };
}

/// The fixture with the pinned map's value `value_size` bytes wide.
fn object(value_size: u32) -> Vec<u8> {
    let code = std::fs::read_to_string(FIXTURE).unwrap();
    compile_bpf_code(&format!("#define VALUE_SIZE {value_size}\n{code}"))
}

/// A minimal Ethernet + IPv4 + UDP packet of `len` bytes.
fn packet(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len.max(42)];
    p[12..14].copy_from_slice(&[0x08, 0x00]);
    p[14] = 0x45;
    p
}

#[test]
fn ring_buffer_round_trip_privileged() {
    need_root!("ring_buffer_round_trip");
    let loaded = bpf::load(&object(8)).unwrap();
    let prog = loaded.program("weft_test_emit").unwrap();
    let mut ring = RingBuf::new(loaded.map("weft_test_events").unwrap()).unwrap();
    let lost = PerCpuArray::<u64>::new(loaded.map("weft_test_lost").unwrap()).unwrap();
    // the typed views check the map's kind and sizes when made
    assert!(bpf::ProgArray::new(loaded.map("weft_test_lost").unwrap()).is_err());
    assert!(TypedMap::<u32, u32>::new(loaded.map("weft_test_lost").unwrap()).is_err());

    // 100 events of 24 bytes each fit a 4 KiB ring: all arrive, in order
    let ctx = SkbCtx {
        mark: 7,
        ..Default::default()
    };
    let run = prog.test_run(&packet(60), &ctx, 100).unwrap();
    assert_eq!(run.retval, 0);
    assert!(ring.wait(std::time::Duration::from_secs(1)).unwrap());
    let mut events = Vec::new();
    let d = ring.drain(usize::MAX, |e| {
        events.push((
            u64::from_ne_bytes(e[0..8].try_into().unwrap()),
            u64::from_ne_bytes(e[8..16].try_into().unwrap()),
        ))
    });
    assert_eq!((d.read, d.discarded), (100, 0));
    assert!(events.iter().all(|&e| e == (60, 7)), "{events:?}");
    assert_eq!(lost.sum(0).unwrap(), 0);

    // 1000 more without draining: the ring fills, the program counts the
    // rest; what the reader gets plus what was lost is exactly 1000
    prog.test_run(&packet(60), &ctx, 1000).unwrap();
    let mut read = 0;
    // bounded drains of at most 64 records at a time
    loop {
        let d = ring.drain(64, |_| {});
        read += d.read;
        if d.read == 0 {
            break;
        }
    }
    let lost = lost.sum(0).unwrap() as usize;
    assert!(lost > 0, "a 4 KiB ring cannot hold 1000 events");
    assert_eq!(read + lost, 1000, "read {read}, lost {lost}");
}

#[test]
fn pinned_map_is_reused_when_layout_matches_and_replaced_when_not_privileged() {
    need_root!("pinned_map_reuse");
    let fs = PrivateBpffs::mount("pin").unwrap();
    let dir = fs.path().join("node-a");
    let opts = LoadOptions {
        pin_dir: Some(&dir),
        share: None,
    };
    let key = 3u32;

    let first = bpf::load_with(&object(8), &opts).unwrap();
    let m = first.map("weft_test_pinned").unwrap();
    assert_eq!(m.pin_outcome(), Some(PinOutcome::Created));
    TypedMap::<u32, u64>::new(m)
        .unwrap()
        .insert(&key, &41)
        .unwrap();
    // unpinned maps are fresh every time and not in the directory
    assert_eq!(first.map("weft_test_lost").unwrap().pin_outcome(), None);
    assert!(!dir.join("weft_test_lost").exists());
    drop(first); // the agent exits: only the pin holds the map

    let second = bpf::load_with(&object(8), &opts).unwrap();
    let m = second.map("weft_test_pinned").unwrap();
    assert_eq!(m.pin_outcome(), Some(PinOutcome::Reused));
    assert_eq!(
        TypedMap::<u32, u64>::new(m).unwrap().get(&key).unwrap(),
        Some(41)
    );

    // another value size: the old map would be misread, so it is replaced
    let third = bpf::load_with(&object(16), &opts).unwrap();
    let m = third.map("weft_test_pinned").unwrap();
    assert_eq!(m.pin_outcome(), Some(PinOutcome::Replaced));
    assert_eq!(m.def().value_size, 16);
    assert_eq!(
        TypedMap::<u32, [u64; 2]>::new(m)
            .unwrap()
            .get(&key)
            .unwrap(),
        None
    );
    // the program of the second load still uses the map it was loaded with
    assert_eq!(
        TypedMap::<u32, u64>::new(second.map("weft_test_pinned").unwrap())
            .unwrap()
            .get(&key)
            .unwrap(),
        Some(41)
    );

    bpf::pin::remove_dir(&dir).unwrap();
    assert!(!dir.exists());
}

#[test]
fn pin_dir_outside_bpffs_is_refused() {
    let dir = std::env::temp_dir().join(format!("weft-not-bpffs-{}", std::process::id()));
    let e = bpf::pin::prepare_dir(&dir).unwrap_err().to_string();
    assert!(e.contains("not on a bpf filesystem"), "{e}");
    assert!(!dir.exists(), "nothing is created off bpffs");
}

/// The cgroup2 mount point, from /proc/self/mounts.
fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"cgroup2"))
        .map(|f| PathBuf::from(f[1]))
}

/// A cgroup made for one test, removed on drop.
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn cgroup_attach_and_detach_privileged() {
    need_root!("cgroup_attach");
    let root = cgroup2_root().expect("a cgroup2 mount (CI has one)");
    let cg = Cgroup(root.join(format!("weft-test-cg-{}", std::process::id())));
    std::fs::create_dir(&cg.0).unwrap();
    let loaded = bpf::load(&object(8)).unwrap();
    let prog = loaded.program("weft_test_cg").unwrap();
    assert_eq!(prog.kind(), ProgKind::CgroupSkbEgress);
    let ids = |p: &Path| bpf::cgroup_programs(p, ProgKind::CgroupSkbEgress).unwrap();
    assert!(ids(&cg.0).is_empty());
    bpf::cgroup_attach(&cg.0, prog).unwrap();
    assert_eq!(ids(&cg.0), vec![prog.id()]);
    // a tc program is refused with a hint
    let tc = loaded.program("weft_test_emit").unwrap();
    assert!(bpf::cgroup_attach(&cg.0, tc).is_err());
    assert!(bpf::cgroup_detach(&cg.0, prog).unwrap());
    assert!(ids(&cg.0).is_empty());
    assert!(!bpf::cgroup_detach(&cg.0, prog).unwrap());
}

#[test]
fn objects_share_maps_by_name_privileged() {
    need_root!("objects_share_maps");
    let first = bpf::load(&object(8)).unwrap();
    let opts = LoadOptions {
        pin_dir: None,
        share: Some(&first),
    };
    let second = bpf::load_with(&object(8), &opts).unwrap();
    let key = 1u32;
    TypedMap::<u32, u64>::new(first.map("weft_test_pinned").unwrap())
        .unwrap()
        .insert(&key, &5)
        .unwrap();
    // one kernel map behind both objects' names
    let m = TypedMap::<u32, u64>::new(second.map("weft_test_pinned").unwrap()).unwrap();
    assert_eq!(m.get(&key).unwrap(), Some(5));
    // another layout under the same name is refused, not silently split
    let e = bpf::load_with(&object(16), &opts).unwrap_err().to_string();
    assert!(e.contains("defined differently"), "{e}");
}

/// A program array: `weft_test_entry` tail-calls slot 0 and returns 1 when
/// the slot is empty; `weft_test_target` returns 42.
const TAIL_CALL: &str = r#"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct weft_map_def { __u32 type, key_size, value_size, max_entries, map_flags; };
struct weft_map_def SEC("maps") weft_test_jump = {
	.type = BPF_MAP_TYPE_PROG_ARRAY, .key_size = 4, .value_size = 4, .max_entries = 4,
};
char LICENSE[] SEC("license") = "GPL";
SEC("tc/target") int weft_test_target(struct __sk_buff *skb) { return 42; }
SEC("tc/entry") int weft_test_entry(struct __sk_buff *skb)
{
	bpf_tail_call(skb, &weft_test_jump, 0);
	return 1;
}
"#;

#[test]
fn program_array_tail_calls_privileged() {
    need_root!("program_array_tail_calls");
    let loaded = bpf::load(&compile_bpf_code(TAIL_CALL)).unwrap();
    let jump = bpf::ProgArray::new(loaded.map("weft_test_jump").unwrap()).unwrap();
    let entry = loaded.program("weft_test_entry").unwrap();
    let run = || {
        entry
            .test_run(&packet(60), &SkbCtx::default(), 1)
            .unwrap()
            .retval
    };
    assert_eq!(run(), 1, "empty slot: the tail call falls through");
    jump.set(0, loaded.program("weft_test_target").unwrap())
        .unwrap();
    assert_eq!(run(), 42, "slot 0 runs the target");
    assert!(jump.clear(0).unwrap());
    assert_eq!(run(), 1);
}
