//! Privileged tests of the eBPF loader (`weft_datapath::bpf`) against the real
//! kernel: load a tc program that calls the conntrack kfuncs, attach it with
//! tcx to a veth inside namespaces created here (`wbl-<pid>-<test>-<role>`,
//! deleted on drop, also on failure), send traffic across, read its maps.
//! Nothing touches the root namespace. Without root they skip loudly.

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use common::clang::{compile_bpf, compile_bpf_code, FIXTURE};
use common::*;
use weft_datapath::bpf::{self, BpfError, TcxDirection};
use weft_datapath::netns::run_in;

const PROG: &str = "weft_test_ct";

fn u64_at(v: &[u8]) -> u64 {
    u64::from_ne_bytes(v.try_into().unwrap())
}

/// Slots 0 (packets), 1 (IPv4 packets) and 2 (conntrack hits) of the
/// fixture's counters.
fn counts(loaded: &bpf::Loaded) -> (u64, u64, u64) {
    let m = loaded.map("weft_test_counts").unwrap();
    let get = |k: u32| u64_at(&m.lookup(&k.to_ne_bytes()).unwrap().unwrap());
    (get(0), get(1), get(2))
}

#[test]
fn tcx_attach_replaces_and_detaches() {
    need_root!("bpf_loader");
    let host = Ns::new("tcx", "host");
    let pod = Ns::new("tcx", "pod");
    host.ip(&[
        "link", "add", "wblh0", "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
    ]);
    host.ip(&["addr", "add", "10.213.0.1/30", "dev", "wblh0"]);
    host.ip(&["link", "set", "wblh0", "up"]);
    pod.ip(&["addr", "add", "10.213.0.2/30", "dev", "eth0"]);
    pod.ip(&["link", "set", "eth0", "up"]);
    // a `ct state` rule turns conntrack on in the host netns, so the pod's
    // flow gets an entry that bpf_skb_ct_lookup can find
    run(
        "ip",
        &[
            "netns",
            "exec",
            &host.name,
            "nft",
            "add table ip wbl; \
          add chain ip wbl pre { type filter hook prerouting priority 0; }; \
          add rule ip wbl pre ct state new counter",
        ],
    );

    let obj = compile_bpf(Path::new(FIXTURE));
    let first = bpf::load(&obj).unwrap();
    let second = bpf::load(&obj).unwrap();
    let (a, b) = (first.program(PROG).unwrap(), second.program(PROG).unwrap());
    assert_ne!(a.id(), b.id());
    assert_eq!(a.name(), PROG);

    let ifindex = run_in(&host.path(), || {
        // SAFETY: the argument is a NUL-terminated string literal.
        let ifindex = unsafe { libc::if_nametoindex(c"wblh0".as_ptr()) };
        assert_ne!(ifindex, 0);
        let ingress = || bpf::tcx_programs(ifindex, TcxDirection::Ingress).unwrap();
        assert_eq!(ingress(), []);

        bpf::tcx_attach(ifindex, TcxDirection::Ingress, a).unwrap();
        assert_eq!(ingress(), [(a.id(), PROG.to_string())]);
        // idempotent
        bpf::tcx_attach(ifindex, TcxDirection::Ingress, a).unwrap();
        assert_eq!(ingress(), [(a.id(), PROG.to_string())]);
        // a new instance replaces the old one
        bpf::tcx_attach(ifindex, TcxDirection::Ingress, b).unwrap();
        assert_eq!(ingress(), [(b.id(), PROG.to_string())]);
        bpf::tcx_attach(ifindex, TcxDirection::Ingress, b).unwrap();
        assert_eq!(ingress(), [(b.id(), PROG.to_string())]);
        // another program on the other hook is independent
        let pass = second.program("weft_test_pass").unwrap();
        bpf::tcx_attach(ifindex, TcxDirection::Egress, pass).unwrap();
        assert_eq!(ingress().len(), 1);
        assert_eq!(
            bpf::tcx_programs(ifindex, TcxDirection::Egress)
                .unwrap()
                .len(),
            1
        );
        ifindex
    })
    .unwrap();

    // traffic from the pod arrives on the host veth's ingress; one socket,
    // so one UDP flow whose later packets find the first one's conntrack entry
    let sock = run_in(&pod.path(), || UdpSocket::bind("10.213.0.2:0").unwrap()).unwrap();
    // unconnected: ICMP port unreachable answers do not fail later sends
    let send = |n: usize| {
        (0..n).for_each(|_| assert_eq!(sock.send_to(b"weft", "10.213.0.1:9").unwrap(), 4))
    };
    send(5);
    let deadline = Instant::now() + Duration::from_secs(5);
    while counts(&second).2 == 0 && Instant::now() < deadline {
        send(1);
        std::thread::sleep(Duration::from_millis(50));
    }
    let (all, ipv4, ct_hits) = counts(&second);
    println!("counted {all} packets, {ipv4} IPv4, {ct_hits} conntrack hits");
    assert!(
        ipv4 >= 5 && all >= ipv4,
        "counted {all} packets, {ipv4} IPv4"
    );
    assert!(
        ct_hits > 0,
        "bpf_skb_ct_lookup found no entry in {ipv4} IPv4 packets"
    );
    assert_eq!(
        counts(&first),
        (0, 0, 0),
        "the replaced instance saw traffic"
    );
    let per_cpu = second
        .map("weft_test_percpu")
        .unwrap()
        .lookup_percpu(&0u32.to_ne_bytes());
    let per_cpu = per_cpu.unwrap().unwrap();
    assert_eq!(per_cpu.len(), bpf::possible_cpus().unwrap());
    assert_eq!(per_cpu.iter().map(|v| u64_at(v)).sum::<u64>(), all);

    run_in(&host.path(), || {
        assert_eq!(
            bpf::tcx_detach_named(ifindex, TcxDirection::Ingress, PROG).unwrap(),
            1
        );
        assert_eq!(
            bpf::tcx_programs(ifindex, TcxDirection::Ingress).unwrap(),
            []
        );
        assert_eq!(
            bpf::tcx_detach_named(ifindex, TcxDirection::Ingress, PROG).unwrap(),
            0
        );
        assert_eq!(
            bpf::tcx_programs(ifindex, TcxDirection::Egress)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            bpf::tcx_detach_named(ifindex, TcxDirection::Egress, "weft_test_pass").unwrap(),
            1
        );
    })
    .unwrap();
    let before = counts(&second).0;
    send(3);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(counts(&second).0, before, "detached program still runs");
}

#[test]
fn tcx_on_a_missing_device_says_so() {
    need_root!("bpf_loader");
    let ns = Ns::new("nodev", "host");
    let loaded = bpf::load(&compile_bpf(Path::new(FIXTURE))).unwrap();
    run_in(&ns.path(), || {
        let e = bpf::tcx_attach(4242, TcxDirection::Ingress, loaded.program(PROG).unwrap());
        let e = e.unwrap_err();
        println!("{e}");
        assert_eq!(e.errno(), Some(libc::ENODEV), "{e}");
        assert!(
            e.to_string().contains("no interface with that ifindex"),
            "{e}"
        );
        assert!(bpf::tcx_programs(4242, TcxDirection::Egress).is_err());
    })
    .unwrap();
}

#[test]
fn maps_from_userspace() {
    need_root!("bpf_loader");
    let loaded = bpf::load(&compile_bpf(Path::new(FIXTURE))).unwrap();
    assert_eq!(loaded.maps().len(), 3);
    assert_eq!(loaded.programs().len(), 2);

    let h = loaded.map("weft_test_hash").unwrap();
    assert_eq!((h.def().key_size, h.def().value_size), (4, 12));
    let (k1, k2) = (1u32.to_ne_bytes(), 2u32.to_ne_bytes());
    assert_eq!(h.keys().unwrap(), Vec::<Vec<u8>>::new());
    assert_eq!(h.lookup(&k1).unwrap(), None);
    h.update(&k1, &[1; 12]).unwrap();
    h.update(&k2, &[2; 12]).unwrap();
    h.update(&k1, &[3; 12]).unwrap();
    assert_eq!(h.lookup(&k1).unwrap(), Some(vec![3; 12]));
    let mut keys = h.keys().unwrap();
    keys.sort();
    assert_eq!(keys, [k1.to_vec(), k2.to_vec()]);
    assert!(h.delete(&k1).unwrap());
    assert!(!h.delete(&k1).unwrap());
    assert_eq!(h.keys().unwrap(), [k2.to_vec()]);

    // sizes are checked before the kernel sees the buffers
    let e = h.update(&[0; 3], &[0; 12]).unwrap_err();
    assert!(
        matches!(
            e,
            BpfError::Size {
                what: "key",
                expected: 4,
                got: 3,
                ..
            }
        ),
        "{e}"
    );
    let e = h.update(&k1, &[0; 8]).unwrap_err();
    assert!(
        e.to_string()
            .contains("value is 8 bytes, the map's value size is 12"),
        "{e}"
    );
    assert!(h.lookup(&[0; 5]).is_err());

    // arrays list every index
    let counts = loaded.map("weft_test_counts").unwrap();
    assert_eq!(counts.keys().unwrap().len(), 4);
    assert!(counts.lookup_percpu(&k1).is_err());

    // per-CPU: an update writes every CPU; lookup must be lookup_percpu
    let pc = loaded.map("weft_test_percpu").unwrap();
    pc.update(&0u32.to_ne_bytes(), &7u64.to_ne_bytes()).unwrap();
    let all = pc.lookup_percpu(&0u32.to_ne_bytes()).unwrap().unwrap();
    assert_eq!(
        all,
        vec![7u64.to_ne_bytes().to_vec(); bpf::possible_cpus().unwrap()]
    );
    let e = pc.lookup(&0u32.to_ne_bytes()).unwrap_err();
    assert!(e.to_string().contains("use lookup_percpu"), "{e}");
    // an array index out of range is absent (ENOENT), like a missing hash key
    assert_eq!(pc.lookup_percpu(&9u32.to_ne_bytes()).unwrap(), None);

    assert!(loaded.map("nope").is_err());
    assert!(loaded
        .program("nope")
        .unwrap_err()
        .to_string()
        .contains("no program named nope"));
}

const BAD_PROGRAM: &str = r#"
#include <linux/bpf.h>
#define SEC(n) __attribute__((section(n), used))
struct weft_map_def { __u32 type, key_size, value_size, max_entries, map_flags; };
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
struct weft_map_def SEC("maps") weft_m = { BPF_MAP_TYPE_HASH, 4, 8, 4, 0 };
SEC("tc/bad") int weft_bad(struct __sk_buff *skb)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&weft_m, &k);
	return *v; /* no NULL check: the verifier must refuse */
}
char _license[] SEC("license") = "GPL";
"#;

#[test]
fn verifier_rejection_carries_the_log() {
    need_root!("bpf_loader");
    let e = bpf::load(&compile_bpf_code(BAD_PROGRAM)).unwrap_err();
    println!("{e}");
    let BpfError::Verifier {
        program,
        errno,
        log,
    } = &e
    else {
        panic!("not a verifier error: {e}")
    };
    assert_eq!(program, "weft_bad");
    assert_eq!(*errno, libc::EACCES);
    assert!(log.lines().count() <= 40, "{log}");
    assert!(log.contains("invalid mem access"), "{log}");
}

#[test]
fn a_missing_kfunc_fails_before_any_syscall() {
    // no root needed: kfuncs are resolved before maps are created
    let code = BAD_PROGRAM.replace(
        "return *v; /* no NULL check: the verifier must refuse */",
        "weft_no_such_kfunc(); return v ? 0 : -1;",
    );
    let code = code.replace(
        "SEC(\"tc/bad\")",
        "extern void weft_no_such_kfunc(void) __attribute__((section(\".ksyms\")));\nSEC(\"tc/bad\")",
    );
    let e = bpf::load(&compile_bpf_code(&code)).unwrap_err();
    assert!(
        matches!(e, BpfError::KfuncNotFound { ref name } if name == "weft_no_such_kfunc"),
        "{e}"
    );
}
