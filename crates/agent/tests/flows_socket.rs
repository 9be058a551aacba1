//! Observers on the real socket: `POST /v1/flows` streams flows (the agent
//! fed by the fake flow source), a followed stream sees a new flow within a
//! second and ends when the observer stops, flows name the pods weftd
//! attached, and a full stream lane neither takes CNI's lane nor its body
//! budget: ADD and views are served while every stream slot is held.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use weft_agent::config::AgentConfig;
use weft_api::stream::{stream, Streamed};
use weft_api::{paths, AddRequest, Attachment, FlowLine, FlowQuery, NeutralResult, PodRef};
use weft_bpf_abi::{FlowEvent, AF_INET, VERDICT_DROPPED};
use weft_datapath::flows::{FakeFlowSource, FlowSource};
use weft_datapath::RecordingDatapath;
use weft_store::embedded::EmbeddedStore;
use weft_store::Store;

struct Server {
    dir: PathBuf,
    socket: PathBuf,
    fake: FakeFlowSource,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn server(tag: &str) -> Server {
    let dir = std::env::temp_dir().join(format!("weft-flows-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = AgentConfig::parse_from([
        "weftd",
        "--node-name=n1",
        "--pool=10.10.0.0/16",
        &format!("--spool-dir={}", dir.join("spool").display()),
        "--state-dir=/nonexistent-not-used",
    ]);
    let store = || -> Arc<dyn Store> { Arc::new(EmbeddedStore::in_memory()) };
    let agent =
        weft_agent::build_with(&cfg, store(), store(), Arc::new(RecordingDatapath::new())).unwrap();
    let fake = FakeFlowSource::new();
    let f = fake.clone();
    weft_agent::flows::start(
        &agent,
        1024,
        Box::new(move || Some(Box::new(f.clone()) as Box<dyn FlowSource>)),
    );
    let socket = dir.join("weftd.sock");
    let listener = weft_agent::server::bind(&socket).unwrap();
    std::thread::spawn(move || weft_agent::server::serve(listener, agent));
    Server { dir, socket, fake }
}

fn add(socket: &Path, cid: &str) -> (u16, Duration, Vec<u8>) {
    let req = AddRequest {
        attachment: Attachment {
            container_id: cid.into(),
            ifname: "eth0".into(),
        },
        netns: "/proc/self/ns/net".into(),
        network: "net1".into(),
        pod: PodRef {
            namespace: "shop".into(),
            name: format!("pod-{cid}"),
            uid: String::new(),
        },
        mtu: None,
        want_ipv4: true,
        want_ipv6: false,
        requested_ips: vec![],
    };
    let start = Instant::now();
    let r = weft_api::http::call(
        socket,
        "POST",
        paths::CNI_ADD,
        &serde_json::to_vec(&req).unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    (r.status, start.elapsed(), r.body)
}

fn event(src: std::net::Ipv4Addr, dport: u16) -> FlowEvent {
    let mut ev = FlowEvent {
        ts_ns: weft_datapath::flows::monotonic_ns(),
        family: AF_INET,
        proto: 6,
        verdict: VERDICT_DROPPED,
        drop_reason: 2,
        dport: dport.to_be(),
        packets: 1,
        ..Default::default()
    };
    ev.src[..4].copy_from_slice(&src.octets());
    ev.dst[..4].copy_from_slice(&[10, 10, 99, 99]);
    ev
}

fn follow_query() -> Vec<u8> {
    serde_json::to_vec(&FlowQuery {
        follow: true,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn a_followed_stream_sees_a_new_flow_within_a_second_named_by_pod_and_stops_cleanly() {
    let srv = server("follow");
    let (status, _, body) = add(&srv.socket, "c1");
    assert_eq!(status, 200);
    let result: NeutralResult = serde_json::from_slice(&body).unwrap();
    let ip = match result.ips[0].address.addr() {
        std::net::IpAddr::V4(a) => a,
        other => panic!("{other}"),
    };
    let fake = srv.fake.clone();
    let pusher = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let pushed = Instant::now();
        fake.push(event(ip, 8080));
        pushed
    });
    let mut got = None;
    let mut seen_at = None;
    let r = stream(
        &srv.socket,
        "POST",
        paths::FLOWS,
        &follow_query(),
        Duration::from_secs(5),
        |line| {
            if let FlowLine::Flow(f) = serde_json::from_slice(line).unwrap() {
                seen_at = Some(Instant::now());
                got = Some(f);
                return false;
            }
            true
        },
    )
    .unwrap();
    assert_eq!(r, Streamed::Stopped);
    let pushed = pusher.join().unwrap();
    let latency = seen_at.unwrap() - pushed;
    assert!(latency < Duration::from_secs(1), "took {latency:?}");
    let f = got.unwrap();
    assert_eq!(f.source.pod.as_deref(), Some("pod-c1"));
    assert_eq!(f.source.namespace.as_deref(), Some("shop"));
    assert_eq!(f.destination.port, 8080);
    assert_eq!(f.drop_reason.as_deref(), Some("POLICY_DEFAULT"));
    // without follow the reply ends by itself, with what is stored
    let mut n = 0;
    let q = serde_json::to_vec(&FlowQuery::default()).unwrap();
    let r = stream(
        &srv.socket,
        "POST",
        paths::FLOWS,
        &q,
        Duration::from_secs(5),
        |_| {
            n += 1;
            true
        },
    )
    .unwrap();
    assert_eq!((r, n), (Streamed::Done, 1));
    // a GET or a bad body is an ordinary error
    let r = weft_api::http::call(
        &srv.socket,
        "GET",
        paths::FLOWS,
        b"",
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(r.status, 405);
    let r = weft_api::http::call(
        &srv.socket,
        "POST",
        paths::FLOWS,
        b"{nope",
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(r.status, 400);
}

#[test]
fn cni_add_and_views_are_served_while_every_stream_slot_is_held() {
    let srv = server("lanes");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // as many followers as the stream lane holds
    let observers: Vec<_> = (0..weft_agent::server::LIMITS.stream_lane)
        .map(|_| {
            let (socket, stop) = (srv.socket.clone(), stop.clone());
            std::thread::spawn(move || loop {
                let r = stream(
                    &socket,
                    "POST",
                    paths::FLOWS,
                    &follow_query(),
                    Duration::from_secs(5),
                    |_| !stop.load(std::sync::atomic::Ordering::SeqCst),
                );
                // the probe below holds a slot for a moment: an observer that
                // came in just then was refused and tries again
                if !matches!(r, Ok(Streamed::Refused(_))) {
                    return r;
                }
                std::thread::sleep(Duration::from_millis(10));
            })
        })
        .collect();
    // wait until they all hold a slot: one more (a query that would end at
    // once) is refused, and as probes are one at a time, only observers can
    // be holding the slots then
    let once = serde_json::to_vec(&FlowQuery::default()).unwrap();
    let start = Instant::now();
    loop {
        let r = stream(
            &srv.socket,
            "POST",
            paths::FLOWS,
            &once,
            Duration::from_secs(2),
            |_| true,
        )
        .unwrap();
        if let Streamed::Refused(resp) = r {
            assert_eq!(resp.status, 503);
            assert!(String::from_utf8_lossy(&resp.body).contains("overloaded"));
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the stream lane never filled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..5 {
        let (status, took, body) = add(&srv.socket, &format!("busy{i}"));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert!(took < Duration::from_secs(1), "ADD took {took:?}");
    }
    let r = weft_api::http::call(
        &srv.socket,
        "GET",
        paths::STATUS,
        b"",
        Duration::from_secs(2),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    // the observers get a flow, then stop on their next line
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    srv.fake
        .push(event(std::net::Ipv4Addr::new(10, 10, 0, 9), 1));
    for o in observers {
        assert_eq!(o.join().unwrap().unwrap(), Streamed::Stopped);
    }
}
