//! What weftd guarantees when things go wrong, over its seams: a DEL cut
//! short is finished at the next start, GC never collects an attachment
//! whose ADD is in flight or fresh, wrong netns and static-address requests
//! are input errors that change nothing. (The privileged tests in
//! tests/tests/hardening.rs prove the same with a real `kill -9` and kernel.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use weft_api::GcRequest;
use weft_datapath::{DatapathError, Op};

fn held_by(f: &Fixture, cid: &str) -> usize {
    f.agent
        .ipam()
        .allocations()
        .unwrap()
        .iter()
        .filter(|a| a.container_id == cid)
        .count()
}

/// The state a weftd killed inside a DEL leaves, at each step of it: the
/// record marked deleting, with or without the release done. The next start
/// tears the interface down, releases and forgets: no address is left free
/// in IPAM while a pod holds it, whether or not the runtime ever retries.
#[test]
fn a_del_cut_short_is_finished_at_the_next_start() {
    for released in [false, true] {
        let f = fixture(if released { "cut-rel" } else { "cut-mark" });
        let r = f.agent.add(&add_req("c1")).unwrap();
        f.agent.add(&add_req("c2")).unwrap();
        let host = r.interfaces[0].name.clone();
        let ep = f.agent.endpoints().begin_delete(&att("c1")).unwrap();
        assert!(ep.is_some());
        if released {
            let handle = weft_ipam::AllocationAttrs {
                container_id: "c1".into(),
                ifname: "eth0".into(),
                pod_namespace: String::new(),
                pod_name: String::new(),
            }
            .handle();
            f.agent.ipam().release(&handle).unwrap();
        }
        f.dp.take_calls();

        let agent = restart(&f);
        assert!(agent.endpoints().get(&att("c1")).is_none());
        assert!(agent.endpoints().deleting().is_empty(), "finished");
        assert!(
            f.dp.calls_of(Op::Detach)
                .iter()
                .any(|c| format!("{c:?}").contains(&host)),
            "interface torn down (released: {released})"
        );
        assert!(!f.dp.attached().contains_key(&host));
        assert_eq!(held_by(&f, "c1"), 0, "addresses released");
        assert_eq!(held_by(&f, "c2"), 2, "the other pod untouched");
        let check = agent.ipam_check().unwrap();
        assert!(check.is_clean(), "{check:?}");
        // the record is gone for good
        let again = restart(&f);
        assert!(again.endpoints().deleting().is_empty());
        assert_eq!(again.endpoints().len(), 1);
    }
}

/// A teardown that fails leaves the record marked deleting (the interface
/// may still be there), its addresses out of leak collection's reach, and
/// the next start finishes it.
#[test]
fn a_failed_teardown_keeps_the_record_until_it_is_finished() {
    let f = fixture("td-fail");
    f.agent.add(&add_req("c1")).unwrap();
    f.dp.fail_always(Op::Detach, |_| DatapathError::Injected("busy".into()));
    f.agent.del(&del_req("c1")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.dp.calls_of(Op::Detach).is_empty() {
        assert!(Instant::now() < deadline, "teardown never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        f.agent.endpoints().deleting().len(),
        1,
        "kept: veth may exist"
    );
    assert!(
        f.agent.endpoints().get(&att("c1")).is_none(),
        "out of service"
    );
    f.dp.clear_failures(Op::Detach);
    let agent = restart(&f);
    assert!(agent.endpoints().deleting().is_empty());
    assert!(agent.ipam_check().unwrap().is_clean());
}

/// GC racing ADDs (bounded: 48 ADDs on 4 threads, GC in a loop for at most
/// 10 s), with a list of valid attachments that never names them: none may
/// be collected, neither while its ADD is in flight nor right after.
#[test]
fn gc_never_collects_an_attachment_in_flight_or_fresh() {
    let f = fixture("gc-race");
    let agent = f.agent.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (added, gcs) = std::thread::scope(|s| {
        let gc = s.spawn(|| {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let reply = agent
                    .gc(&GcRequest {
                        network: "net1".into(),
                        valid_attachments: vec![],
                    })
                    .unwrap();
                assert!(
                    reply.collected.is_empty(),
                    "collected {:?}",
                    reply.collected
                );
                n += 1;
            }
            n
        });
        let adders: Vec<_> = (0..4)
            .map(|t| {
                let agent = agent.clone();
                s.spawn(move || {
                    (0..12)
                        .map(|i| {
                            let cid = format!("g{t}-{i}");
                            agent.add(&add_req(&cid)).unwrap();
                            cid
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let added: Vec<String> = adders.into_iter().flat_map(|h| h.join().unwrap()).collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (added, gc.join().unwrap())
    });
    assert!(gcs > 0);
    assert_eq!(added.len(), 48);
    for cid in &added {
        assert!(
            f.agent.endpoints().get(&att(cid)).is_some(),
            "{cid} collected"
        );
        assert_eq!(held_by(&f, cid), 2, "{cid}'s addresses");
    }
    // past the grace period the same GC collects them all (and says so loudly)
    for cid in &added {
        age(&f, cid);
    }
    let reply = f
        .agent
        .gc(&GcRequest {
            network: "net1".into(),
            valid_attachments: vec![att("g0-0"), att("g0-0")],
        })
        .unwrap();
    assert_eq!(reply.collected.len(), 47);
    assert!(f.agent.endpoints().get(&att("g0-0")).is_some());
}

/// The node's own netns (refused by the data path, by identity) is an input
/// error, and nothing stays allocated or recorded.
#[test]
fn a_refused_netns_is_code_4_and_leaves_nothing() {
    let f = fixture("nodens");
    f.dp.fail_next(
        Op::CreateLink,
        DatapathError::NodeNetns {
            path: "/proc/self/ns/net".into(),
            whose: "the node's own (the one weftd runs in)",
        },
    );
    let e = f.agent.add(&add_req("c1")).unwrap_err();
    assert_eq!(e.code, 4, "{}", e.msg);
    assert!(
        e.msg.contains("node's own") && e.msg.contains("container runtime"),
        "{}",
        e.msg
    );
    f.dp.fail_next(
        Op::CreateLink,
        DatapathError::NotNetns {
            path: "/dev/zero".into(),
            what: "a character device".into(),
        },
    );
    let e = f.agent.add(&add_req("c1")).unwrap_err();
    assert_eq!(e.code, 4);
    assert!(
        e.msg.contains("/dev/zero is a character device"),
        "{}",
        e.msg
    );
    assert!(f.agent.ipam().allocations().unwrap().is_empty());
    assert!(f.agent.endpoints().is_empty());
}

#[test]
fn two_static_addresses_of_one_family_are_an_input_error() {
    let f = fixture("two-v4");
    let mut r = add_req("c1");
    r.requested_ips = vec!["10.10.0.5".parse().unwrap(), "10.10.0.6".parse().unwrap()];
    let e = f.agent.add(&r).unwrap_err();
    assert_eq!(e.code, 7, "{}", e.msg);
    assert!(f.dp.calls_of(Op::CreateLink).is_empty());
    assert!(f.agent.ipam().allocations().unwrap().is_empty());
}
