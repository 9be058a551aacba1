//! Support of kube_agent.rs: a TCP relay that stands between weftd and the
//! API server (stopping it is, to weftd, the API server going away: open
//! connections cut, new ones refused), and small helpers.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

struct Running {
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: JoinHandle<()>,
}

/// Listens on `listen` inside `netns` and relays every connection to
/// `upstream` (reached from the same namespace).
pub struct Relay {
    netns: PathBuf,
    listen: SocketAddr,
    upstream: SocketAddr,
    running: Option<Running>,
}

impl Relay {
    pub fn new(netns: PathBuf, listen: SocketAddr, upstream: SocketAddr) -> Relay {
        Relay {
            netns,
            listen,
            upstream,
            running: None,
        }
    }

    pub fn start(&mut self) {
        assert!(self.running.is_none(), "the relay runs already");
        let listen = self.listen;
        let listener = weft_datapath::netns::run_in(&self.netns, move || TcpListener::bind(listen))
            .expect("enter the node namespace")
            .expect("bind the relay");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (netns, upstream) = (self.netns.clone(), self.upstream);
        let (stop2, conns2) = (stop.clone(), conns.clone());
        let accept = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(_) => continue,
                };
                let _ = client.set_nonblocking(false);
                let server = weft_datapath::netns::run_in(&netns, move || {
                    TcpStream::connect_timeout(&upstream, Duration::from_secs(2))
                });
                let Ok(Ok(server)) = server else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let mut list = conns2.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                drop(list);
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
            // the listener drops here: new connections are refused
        });
        self.running = Some(Running {
            stop,
            conns,
            accept,
        });
    }

    /// Cuts every relayed connection and refuses new ones.
    pub fn stop(&mut self) {
        let Some(r) = self.running.take() else {
            return;
        };
        r.stop.store(true, Ordering::SeqCst);
        let _ = r.accept.join();
        for c in r.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// One HTTP GET to weftd's probe address inside `netns`: the status code.
pub fn probe(netns: &std::path::Path, addr: SocketAddr, path: &str) -> Option<u16> {
    let path = path.to_string();
    weft_datapath::netns::run_in(netns, move || -> io::Result<u16> {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        out.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| io::Error::other("no status line"))
    })
    .ok()?
    .ok()
}

/// A network namespace of the test's own (a pod sandbox no kubelet knows),
/// removed on drop, pass or fail.
pub struct GhostNetns(String);

impl GhostNetns {
    pub fn new(name: &str) -> GhostNetns {
        weft_lab::ip(&["netns", "add", name]).expect("ip netns add");
        GhostNetns(name.to_string())
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.0)
    }
}

impl Drop for GhostNetns {
    fn drop(&mut self) {
        let _ = weft_lab::ip(&["netns", "del", &self.0]);
    }
}
