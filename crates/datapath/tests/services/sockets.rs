//! Scaffolding of the socket-LB tests: a private cgroup v2 directory (never
//! the machine's root), backend servers bound inside network namespaces,
//! and client processes run in a namespace and the cgroup. Everything is
//! removed on drop, also when a test fails.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::ffi::CString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weft_datapath::netns::{run_in, spawn_in};
use weft_datapath::services::default_cgroup_root;

/// `<cgroup2 mount>/weft-test-<pid>-<tag>`, removed on drop (its processes,
/// all ours, killed first).
pub struct Cgroup {
    pub path: PathBuf,
}

impl Cgroup {
    pub fn new(tag: &str) -> Cgroup {
        let root = default_cgroup_root().expect("a cgroup2 mount (see /proc/self/mountinfo)");
        let path = root.join(format!("weft-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).expect("create the test cgroup");
        Cgroup { path }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            let procs = std::fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) of a process this test put into its own cgroup.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Backend servers: each TCP connection gets `<name>\n`, each datagram is
/// answered with `<name>`. Stopped and joined on drop.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    pub fn new() -> Servers {
        Servers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        }
    }

    pub fn tcp(&mut self, netns: &Path, addr: SocketAddr, name: &'static str) {
        let l = run_in(netns, move || TcpListener::bind(addr))
            .unwrap()
            .unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::clone(&self.stop);
        self.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(format!("{name}\n").as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }));
    }

    /// Each TCP connection gets `<name> <its peer>\n`, then every line it
    /// sends is echoed back until it closes (or the servers stop).
    pub fn tcp_echo(&mut self, netns: &Path, addr: SocketAddr, name: &'static str) {
        let l = run_in(netns, move || TcpListener::bind(addr))
            .unwrap()
            .unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::clone(&self.stop);
        self.threads.push(std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, peer)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
                        let _ = s.write_all(format!("{name} {peer}\n").as_bytes());
                        let stop = Arc::clone(&stop);
                        conns.push(std::thread::spawn(move || {
                            let mut buf = [0u8; 256];
                            while !stop.load(Ordering::Relaxed) {
                                match s.read(&mut buf) {
                                    Ok(0) => break,
                                    Ok(n) => {
                                        if s.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                    Err(_) => {}
                                }
                            }
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        }));
    }

    pub fn udp(&mut self, netns: &Path, addr: SocketAddr, name: &'static str) {
        let s = run_in(netns, move || UdpSocket::bind(addr))
            .unwrap()
            .unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let stop = Arc::clone(&self.stop);
        self.threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((_, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(name.as_bytes(), from);
                }
            }
        }));
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The client side, run by the test binary itself in a child process (see
/// `client_helper`): `tcp|tcptime|udp <addr> <n>`, one line per attempt,
/// `SVC ok <peer or source> <server name>` or `SVC err <errno>`.
pub fn client_main(spec: &str) {
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let [mode, addr, n] = parts[..] else {
        panic!("bad client spec {spec:?}");
    };
    let addr: SocketAddr = addr.parse().unwrap();
    let n: usize = n.parse().unwrap();
    let errno = |e: std::io::Error| format!("SVC err {}", e.raw_os_error().unwrap_or(-1));
    for _ in 0..n {
        let line = match mode {
            "tcp" => match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(mut s) => {
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let peer = s.peer_addr().unwrap();
                    let mut got = String::new();
                    let _ = s.read_to_string(&mut got);
                    format!("SVC ok {peer} {}", got.trim())
                }
                Err(e) => errno(e),
            },
            // the connect's duration (ns) as the name
            "tcptime" => {
                let t = Instant::now();
                match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    Ok(s) => format!(
                        "SVC ok {} {}",
                        s.peer_addr().unwrap(),
                        t.elapsed().as_nanos()
                    ),
                    Err(e) => errno(e),
                }
            }
            "udp" => {
                let bind: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0".parse().unwrap()
                } else {
                    "[::]:0".parse().unwrap()
                };
                let s = UdpSocket::bind(bind).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                match s.send_to(b"hi", addr) {
                    Ok(_) => {
                        let mut buf = [0u8; 64];
                        match s.recv_from(&mut buf) {
                            Ok((len, from)) => {
                                format!("SVC ok {from} {}", String::from_utf8_lossy(&buf[..len]))
                            }
                            Err(e) => errno(e),
                        }
                    }
                    Err(e) => errno(e),
                }
            }
            m => panic!("bad client mode {m}"),
        };
        println!("{line}");
    }
}

/// One client attempt's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The peer (TCP getpeername, UDP recvmsg source) and the server's name.
    Ok(SocketAddr, String),
    Err(i32),
}

/// Runs `client_main(spec)` in a child process inside `netns`, in `cgroup`
/// when given; bounded to 60 s (killed after).
pub fn run_client(netns: &Path, cgroup: Option<&Cgroup>, spec: &str) -> Vec<Outcome> {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "client_helper",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("WEFT_SVC_CLIENT", spec)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if let Some(cg) = cgroup {
        let procs = CString::new(
            cg.path
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: between fork and exec the child only calls open(2),
        // write(2) and close(2), async-signal-safe, on a path allocated before
        // the fork; writing "0" moves the calling process into the cgroup.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let r = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = spawn_in(&mut cmd, netns).expect("spawn the client");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = child.wait();
    out.lines()
        // the harness's "test client_helper ... " may precede the first one
        .filter_map(|l| l.find("SVC ").map(|i| &l[i + 4..]))
        .map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            match p[..] {
                ["ok", peer, name] => Outcome::Ok(peer.parse().unwrap(), name.to_string()),
                ["ok", peer] => Outcome::Ok(peer.parse().unwrap(), String::new()),
                ["err", e] => Outcome::Err(e.parse().unwrap()),
                _ => panic!("client said {l:?}"),
            }
        })
        .collect()
}
