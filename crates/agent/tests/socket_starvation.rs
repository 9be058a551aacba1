//! The agent socket cannot be starved: idle connections, a trickling client
//! and many large bodies leave CNI requests served promptly and memory
//! bounded. Each case runs a real weftd server (in this process, over the
//! in-memory store and the recording data path) on a private socket. Every
//! client count and wait is bounded; the cases run one at a time so the
//! memory figure is this case's own.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use weft_agent::config::AgentConfig;
use weft_api::{paths, AddRequest, Attachment, PodRef};
use weft_datapath::RecordingDatapath;
use weft_store::embedded::EmbeddedStore;
use weft_store::Store;

/// One case at a time: the memory case measures this process.
static SERIAL: Mutex<()> = Mutex::new(());
/// How long a CNI ADD may take while the socket is under abuse.
const ADD_BOUND: Duration = Duration::from_secs(2);

/// A server on a socket in a private directory, removed on drop (the server
/// thread itself lives until the test process ends).
struct Server {
    dir: PathBuf,
    socket: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn server(tag: &str) -> Server {
    let dir = std::env::temp_dir().join(format!("weft-sock-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let server = Server {
        socket: dir.join("weftd.sock"),
        dir,
    };
    let cfg = AgentConfig::parse_from([
        "weftd",
        "--node-name=n1",
        "--pool=10.10.0.0/16",
        &format!("--spool-dir={}", server.dir.join("spool").display()),
        "--state-dir=/nonexistent-not-used",
    ]);
    let store = || -> Arc<dyn Store> { Arc::new(EmbeddedStore::in_memory()) };
    let agent =
        weft_agent::build_with(&cfg, store(), store(), Arc::new(RecordingDatapath::new())).unwrap();
    let listener = weft_agent::server::bind(&server.socket).unwrap();
    std::thread::spawn(move || weft_agent::server::serve(listener, agent));
    server
}

/// A CNI ADD through the socket as weft-cni sends it; returns the status and
/// how long it took.
fn add(socket: &Path, cid: &str) -> (u16, Duration, String) {
    let req = AddRequest {
        attachment: Attachment {
            container_id: cid.into(),
            ifname: "eth0".into(),
        },
        // any path that exists: the recording data path never opens it
        netns: "/proc/self/ns/net".into(),
        network: "net1".into(),
        pod: PodRef {
            namespace: "default".into(),
            name: format!("pod-{cid}"),
            uid: String::new(),
        },
        mtu: None,
        want_ipv4: true,
        want_ipv6: false,
        requested_ips: vec![],
    };
    let body = serde_json::to_vec(&req).unwrap();
    let start = Instant::now();
    let r = weft_api::http::call(socket, "POST", paths::CNI_ADD, &body, ADD_BOUND * 2);
    let took = start.elapsed();
    match r {
        Ok(resp) => (
            resp.status,
            took,
            String::from_utf8_lossy(&resp.body).into_owned(),
        ),
        Err(e) => (0, took, e.to_string()),
    }
}

fn assert_add_served(socket: &Path, cid: &str) {
    let (status, took, body) = add(socket, cid);
    assert_eq!(status, 200, "ADD failed after {took:?}: {body}");
    assert!(took < ADD_BOUND, "ADD took {took:?}");
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn idle_connections_do_not_starve_add() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let srv = server("idle");
    // more idle connections than weftd reads at once
    let idle: Vec<UnixStream> = (0..300)
        .map(|_| UnixStream::connect(&srv.socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    assert_add_served(&srv.socket, "idle-1");
    assert_add_served(&srv.socket, "idle-2");
    drop(idle);
}

#[test]
fn a_trickling_client_is_cut_at_the_deadline() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let srv = server("slow");
    let mut slow = UnixStream::connect(&srv.socket).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    let start = Instant::now();
    // one byte of a never-ending header every 250 ms, for at most 8 s
    slow.write_all(b"POST /v1/cni/add HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    let mut cut_after = None;
    while start.elapsed() < Duration::from_secs(8) {
        let mut buf = [0u8; 512];
        match slow.read(&mut buf) {
            Ok(_) => {
                cut_after = Some(start.elapsed());
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                cut_after = Some(start.elapsed());
                break;
            }
        }
        if slow.write_all(b"a").is_err() {
            cut_after = Some(start.elapsed());
            break;
        }
    }
    let cut_after =
        cut_after.expect("a client sending 4 bytes a second held its connection for 8 s");
    assert!(
        cut_after < Duration::from_secs(4),
        "cut after {cut_after:?}"
    );
    assert_add_served(&srv.socket, "slow-1");
}

#[test]
fn many_large_bodies_keep_memory_bounded_and_add_served() {
    const CLIENTS: usize = 250;
    const BODY: usize = 4 << 20;
    /// What weftd may grow by while 1 GiB of bodies is offered to it.
    const RSS_BOUND: usize = 96 << 20;
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let srv = server("big");
    assert_add_served(&srv.socket, "big-warm");
    let base = rss_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let settled = Arc::new(AtomicUsize::new(0));
    static CHUNK: [u8; 64 << 10] = [b'x'; 64 << 10];
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (socket, stop, settled) = (srv.socket.clone(), stop.clone(), settled.clone());
            std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || {
                    // announce a 4 MiB body, send all of it but the last byte, hold
                    let sent = (|| -> std::io::Result<()> {
                        let mut s = UnixStream::connect(&socket)?;
                        s.set_write_timeout(Some(Duration::from_secs(10)))?;
                        write!(
                            s,
                            "POST {} HTTP/1.1\r\nContent-Length: {BODY}\r\n\r\n",
                            paths::CNI_ADD
                        )?;
                        let mut left = BODY - 1;
                        while left > 0 {
                            let n = left.min(CHUNK.len());
                            s.write_all(&CHUNK[..n])?;
                            left -= n;
                        }
                        settled.fetch_add(1, Ordering::SeqCst);
                        let deadline = Instant::now() + Duration::from_secs(20);
                        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Ok(())
                    })();
                    if sent.is_err() {
                        // cut by weftd before the body was through
                        settled.fetch_add(1, Ordering::SeqCst);
                    }
                })
                .unwrap()
        })
        .collect();
    let mut peak = 0;
    let start = Instant::now();
    while settled.load(Ordering::SeqCst) < CLIENTS && start.elapsed() < Duration::from_secs(20) {
        peak = peak.max(rss_bytes());
        std::thread::sleep(Duration::from_millis(10));
    }
    peak = peak.max(rss_bytes());
    let all_settled = settled.load(Ordering::SeqCst) == CLIENTS;
    let add = add(&srv.socket, "big-1");
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let grew = peak.saturating_sub(base);
    eprintln!(
        "{CLIENTS} clients x {BODY} bytes: rss grew by {} MiB (bound {} MiB); ADD {} in {:?}",
        grew >> 20,
        RSS_BOUND >> 20,
        add.0,
        add.1
    );
    assert!(all_settled, "clients still sending after 20 s");
    assert!(grew < RSS_BOUND, "rss grew by {} MiB", grew >> 20);
    assert_eq!(add.0, 200, "ADD failed after {:?}: {}", add.1, add.2);
    assert!(add.1 < ADD_BOUND, "ADD took {:?}", add.1);
}
