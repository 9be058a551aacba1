//! weftd's logic over its seams: an in-memory store and the recording data
//! path stand in for the disk and the kernel (the privileged tests in
//! tests/tests/ prove the real ones). No root needed.

mod common;

use common::*;
use weft_api::{CheckRequest, GcRequest};
use weft_datapath::{DatapathError, Op};

#[test]
fn add_wires_a_dual_stack_pod_and_is_idempotent() {
    let f = fixture("add");
    let r1 = f.agent.add(&add_req("c1")).unwrap();
    assert_eq!(r1.ips.len(), 2);
    assert_eq!(r1.interfaces.len(), 2);
    assert_eq!(
        r1.interfaces[1].sandbox.as_deref(),
        Some("/proc/self/ns/net")
    );
    assert_eq!(r1.routes.len(), 2, "a default route per family");
    let r2 = f.agent.add(&add_req("c1")).unwrap();
    assert_eq!(r1, r2, "same answer for the same attachment");
    assert_eq!(f.dp.calls_of(Op::CreateLink).len(), 1, "wired once");
    assert_eq!(f.dp.calls_of(Op::ConfigureLink).len(), 1, "configured once");
    assert_eq!(f.agent.endpoints().len(), 1);
    // a different netns for the same attachment is refused, not silently rewired
    let mut other = add_req("c1");
    other.netns = "/proc/1/ns/net".into();
    assert_eq!(f.agent.add(&other).unwrap_err().code, 4);
}

#[test]
fn re_adding_a_container_whose_recorded_netns_is_gone_replaces_it() {
    // containerd: `ctr run -d --cni` never sends DEL, and its netns path
    // (/proc/<pid>/ns/net) vanishes with the task; running a container of the
    // same name again must work, without leaking the first one's addresses
    let f = fixture("reuse");
    let first = f.agent.add(&add_req("c1")).unwrap();
    let mut ep = f.agent.endpoints().get(&att("c1")).unwrap();
    ep.netns = "/proc/4294967295/ns/net".into();
    f.agent.endpoints().put(ep).unwrap();
    // any path that exists stands for the new task's netns
    let new_ns = tmpdir("reuse-ns").join("net");
    std::fs::write(&new_ns, b"").unwrap();
    let new_ns = new_ns.to_string_lossy().into_owned();
    let mut again = add_req("c1");
    again.netns = new_ns.clone();
    let second = f
        .agent
        .add(&again)
        .expect("the dead attachment is replaced");
    assert_eq!(
        second.interfaces[1].sandbox.as_deref(),
        Some(new_ns.as_str())
    );
    assert_eq!(f.agent.endpoints().len(), 1);
    assert_eq!(f.agent.endpoints().get(&att("c1")).unwrap().netns, new_ns);
    let held = f.agent.ipam().allocations().unwrap();
    assert_eq!(held.len(), 2, "one v4 and one v6, nothing leaked: {held:?}");
    assert_eq!(first.ips.len(), 2);
    // while the recorded netns still exists, a different one is refused
    let mut third = add_req("c1");
    third.netns = "/proc/self/ns/net".into();
    assert_eq!(f.agent.add(&third).unwrap_err().code, 4);
    let _ = std::fs::remove_dir_all(std::path::Path::new(&new_ns).parent().unwrap());
}

#[test]
fn a_failed_attach_gives_the_addresses_back_at_once() {
    for (tag, op) in [
        ("fail-create", Op::CreateLink),
        ("fail-configure", Op::ConfigureLink),
    ] {
        let f = fixture(tag);
        f.dp.fail_next(op, DatapathError::Injected("boom".into()));
        let err = f.agent.add(&add_req("c1")).unwrap_err();
        assert_eq!(err.code, 102, "{op:?}: {err:?}");
        assert!(
            f.agent.ipam().allocations().unwrap().is_empty(),
            "{op:?}: rolled back"
        );
        assert_eq!(f.agent.endpoints().len(), 0, "{op:?}: nothing recorded");
        assert!(f.dp.attached().is_empty(), "{op:?}: no link left");
        // and without quarantine: nothing rests, the addresses are free at once
        let usage = f.agent.ipam().pools_usage().unwrap();
        assert_eq!(
            usage.iter().map(|p| p.quarantined).sum::<u64>(),
            0,
            "{op:?}: {usage:?}"
        );
        // and the next ADD of the same container works
        f.agent.add(&add_req("c1")).unwrap();
    }
}

#[test]
fn ipam_failure_after_the_link_was_made_leaves_no_link() {
    let f = fixture("ipam-fail");
    // a static address outside every pool: IPAM refuses while the link is being made
    let mut req = add_req("c1");
    req.requested_ips = vec!["192.0.2.7".parse().unwrap()];
    let err = f.agent.add(&req).unwrap_err();
    assert_eq!(err.code, 101, "{err:?}");
    let mut tries = 0;
    while !f.dp.attached().is_empty() {
        tries += 1;
        assert!(tries < 200, "the half-made link was never torn down");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(f.agent.endpoints().len(), 0);
}

#[test]
fn del_releases_forgets_and_queues_teardown_and_repeats_cleanly() {
    let f = fixture("del");
    let r = f.agent.add(&add_req("c1")).unwrap();
    f.agent.del(&del_req("c1")).unwrap();
    assert_eq!(f.agent.endpoints().len(), 0);
    assert!(f.agent.ipam().allocations().unwrap().is_empty());
    let usage = f.agent.ipam().pools_usage().unwrap();
    assert_eq!(
        usage.iter().map(|p| p.quarantined).sum::<u64>(),
        2,
        "both addresses in quarantine"
    );
    f.agent.del(&del_req("c1")).unwrap();
    f.agent.del(&del_req("never-seen")).unwrap();
    // the teardown ran (in the background) for the host side of c1
    let host = r.interfaces[0].name.clone();
    let mut tries = 0;
    while !f
        .dp
        .calls_of(Op::Detach)
        .iter()
        .any(|c| format!("{c:?}").contains(&host))
    {
        tries += 1;
        assert!(tries < 200, "teardown never ran");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // re-adding the same container gets new addresses (the old ones rest)
    let again = f.agent.add(&add_req("c1")).unwrap();
    assert_ne!(again.ips[0].address, r.ips[0].address);
}

#[test]
fn check_reports_unknown_containers_and_kernel_drift() {
    let f = fixture("check");
    let unknown = f.agent.check(&CheckRequest {
        attachment: att("nope"),
        netns: "/proc/self/ns/net".into(),
        network: "net1".into(),
        prev_result: None,
    });
    assert_eq!(unknown.unwrap_err().code, 3);
    let r = f.agent.add(&add_req("c1")).unwrap();
    let req = CheckRequest {
        attachment: att("c1"),
        netns: "/proc/self/ns/net".into(),
        network: "net1".into(),
        prev_result: Some(r),
    };
    f.agent.check(&req).unwrap();
    f.dp.set_check_problems(vec!["host route 10.10.0.1/32 via weftx missing".into()]);
    let err = f.agent.check(&req).unwrap_err();
    assert_eq!(err.code, 103);
    assert!(err.msg.contains("host route 10.10.0.1/32"), "{}", err.msg);
}

#[test]
fn gc_collects_attachments_the_runtime_no_longer_knows() {
    let f = fixture("gc");
    f.agent.add(&add_req("keep")).unwrap();
    f.agent.add(&add_req("drop")).unwrap();
    // both past the grace period (a fresh one is kept: see hardening.rs)
    age(&f, "keep");
    age(&f, "drop");
    let reply = f
        .agent
        .gc(&GcRequest {
            network: "net1".into(),
            valid_attachments: vec![att("keep")],
        })
        .unwrap();
    assert_eq!(reply.collected, vec![att("drop")]);
    assert_eq!(f.agent.endpoints().list().len(), 1);
    // another network's GC never touches this network's pods
    let other = f
        .agent
        .gc(&GcRequest {
            network: "other".into(),
            valid_attachments: vec![],
        })
        .unwrap();
    assert!(other.collected.is_empty());
    assert_eq!(
        f.agent.ipam().allocations().unwrap().len(),
        2,
        "keep's v4 and v6 only"
    );
}

#[test]
fn restart_restores_host_side_forgets_vanished_pods_and_removes_orphans() {
    let f = fixture("restart");
    f.agent.add(&add_req("alive")).unwrap();
    let mut gone = add_req("gone");
    gone.netns = "/proc/self/ns/net".into();
    f.agent.add(&gone).unwrap();
    // the "gone" pod's namespace vanishes while weftd is down: rewrite its record
    let mut ep = f.agent.endpoints().get(&att("gone")).unwrap();
    ep.netns = "/run/netns/definitely-not-here".into();
    f.agent.endpoints().put(ep).unwrap();
    // an orphan veth of weft's shape that no endpoint owns
    let orphan = weft_datapath::PodLink {
        netns: "/proc/self/ns/net".into(),
        ifname: "eth0".into(),
        host_ifname: "weft0123456789a".into(),
        mtu: 1500,
        ipv4: None,
        ipv6: None,
    };
    use weft_datapath::Links;
    f.dp.attach(&orphan).unwrap();
    f.dp.set_restore_changes(true);
    f.dp.take_calls();

    let agent = restart(&f);
    assert_eq!(agent.endpoints().len(), 1, "only the live pod is left");
    assert!(agent.endpoints().get(&att("alive")).is_some());
    assert_eq!(f.dp.calls_of(Op::RestoreHostSide).len(), 1);
    assert!(
        !f.dp.attached().contains_key("weft0123456789a"),
        "orphan removed"
    );
    let held: Vec<_> = agent.ipam().allocations().unwrap();
    assert!(
        held.iter().all(|a| a.container_id == "alive"),
        "vanished pod's addresses released"
    );
}

#[test]
fn spooled_dels_are_replayed_at_start_and_bad_files_set_aside() {
    let f = fixture("spool");
    f.agent.add(&add_req("c1")).unwrap();
    std::fs::write(
        f.spool.join("c1-eth0.json"),
        serde_json::to_vec(&del_req("c1")).unwrap(),
    )
    .unwrap();
    std::fs::write(f.spool.join("junk.json"), b"{not json").unwrap();
    let agent = restart(&f);
    assert_eq!(agent.endpoints().len(), 0);
    assert!(agent.ipam().allocations().unwrap().is_empty());
    assert!(!f.spool.join("c1-eth0.json").exists());
    assert!(
        f.spool.join("junk.json.bad").exists(),
        "kept for a person to look at"
    );
    assert_eq!(agent.status().unwrap().spool_replayed, 1);
}

#[test]
fn hostile_attachments_are_refused_before_anything_happens() {
    let f = fixture("hostile");
    for (cid, ifname) in [
        ("", "eth0"),
        ("-x", "eth0"),
        ("a/b", "eth0"),
        ("ok", ""),
        ("ok", "../x"),
        ("ok", "a234567890123456"),
        ("ok", "a b"),
        ("ok", ".."),
    ] {
        let mut r = add_req(cid);
        r.attachment.ifname = ifname.into();
        assert_eq!(f.agent.add(&r).unwrap_err().code, 4, "{cid:?} {ifname:?}");
    }
    assert!(f.dp.calls_of(Op::CreateLink).is_empty());
    assert!(f.agent.ipam().allocations().unwrap().is_empty());
}

#[test]
fn concurrent_adds_of_many_containers_all_succeed_with_distinct_addresses() {
    let f = fixture("conc");
    let agent = f.agent.clone();
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|t| {
                let agent = agent.clone();
                s.spawn(move || {
                    (0..10)
                        .map(|i| agent.add(&add_req(&format!("c{t}-{i}"))).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut seen = std::collections::HashSet::new();
    for r in &results {
        for ip in &r.ips {
            assert!(seen.insert(ip.address), "duplicate {}", ip.address);
        }
    }
    assert_eq!(seen.len(), 160);
}
