//! What a lab pod's "container" runs: for every declared `containerPort`, a
//! small server in the pod's network namespace that speaks the line protocol
//! of the e2e suites' agnhost (netexec / serve-hostname), over TCP and UDP:
//! `hostname` is answered with the pod's name, `clientip` with the peer's
//! `address:port`, any other line is echoed.
//!
//! Plain threads, not tokio: a socket keeps the namespace it was made in, so
//! only the bind runs on a namespace thread; accept and receive poll a stop
//! flag every [`POLL`], so stopping a pod's servers is bounded.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

/// How often a blocked accept / receive looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// The first wait for a new connection after one came.
const ACCEPT_SOON: Duration = Duration::from_millis(1);
/// A TCP connection with no line for this long is closed.
const IDLE: Duration = Duration::from_secs(60);
/// Connections served at once per port; more wait in the backlog.
const MAX_CONNS: usize = 64;
/// The longest line answered; a longer one is cut there.
const MAX_LINE: usize = 4096;

/// A port protocol the servers speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The API's spelling (`TCP`, `UDP`); SCTP and the rest are not served.
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "TCP" => Some(Proto::Tcp),
            "UDP" => Some(Proto::Udp),
            _ => None,
        }
    }
}

/// The answer to one request line (without its line end).
pub fn answer(line: &str, pod_name: &str, peer: SocketAddr) -> String {
    match line.trim_end_matches(['\r', '\n']) {
        "hostname" => pod_name.to_string(),
        "clientip" => canonical(peer).to_string(),
        other => other.to_string(),
    }
}

/// An IPv4 peer seen by a dual-stack socket as `::ffff:a.b.c.d` is shown as
/// `a.b.c.d` (as Go, and so agnhost, shows it).
fn canonical(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

/// The running servers of one pod.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Servers {
    /// Binds every `(port, proto)` inside `netns` (`None`: this process's own
    /// namespace, for hostNetwork pods) and serves them until [`Servers::stop`].
    /// A port that cannot be bound fails the whole start (what was bound is
    /// closed again).
    pub fn start(
        netns: Option<&Path>,
        pod_name: &str,
        ports: &[(u16, Proto)],
    ) -> anyhow::Result<Servers> {
        let mut servers = Servers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for &(port, proto) in ports {
            let bound = match netns {
                Some(ns) => weft_datapath::netns::run_in(ns, move || bind(port, proto))
                    .map_err(|e| anyhow::anyhow!("{e}"))
                    .and_then(|r| r),
                None => bind(port, proto),
            };
            let bound = match bound {
                Ok(b) => b,
                Err(e) => {
                    servers.stop();
                    return Err(e.context(format!("serving {proto:?} port {port} of {pod_name}")));
                }
            };
            let (stop, name) = (servers.stop.clone(), pod_name.to_string());
            let thread = match bound {
                Bound::Tcp(l) => std::thread::Builder::new()
                    .name(format!("tcp-{port}"))
                    .spawn(move || serve_tcp(l, &name, &stop)),
                Bound::Udp(s) => std::thread::Builder::new()
                    .name(format!("udp-{port}"))
                    .spawn(move || serve_udp(s, &name, &stop)),
            };
            servers
                .threads
                .push(thread.context("starting a server thread")?);
        }
        Ok(servers)
    }

    /// Stops every server and waits for its threads (at most a few polls).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Binds `[::]:port` (dual-stack: IPv4 peers arrive mapped), or
/// `0.0.0.0:port` where the namespace has no IPv6.
fn bind(port: u16, proto: Proto) -> anyhow::Result<Bound> {
    let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    let any4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
    let r = match proto {
        Proto::Tcp => TcpListener::bind(any6)
            .or_else(|_| TcpListener::bind(any4))
            .map(Bound::Tcp),
        Proto::Udp => UdpSocket::bind(any6)
            .or_else(|_| UdpSocket::bind(any4))
            .map(Bound::Udp),
    };
    r.with_context(|| format!("binding port {port}; is another pod on this network using it?"))
}

fn serve_tcp(listener: TcpListener, pod: &str, stop: &Arc<AtomicBool>) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let active = Arc::new(AtomicUsize::new(0));
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    // the wait before accept looks again: 1 ms after a connection, doubling
    // up to POLL while none comes. Clients (probes, tests) come one after
    // another; a flat POLL made each wait for it, ~50 ms a connection.
    let mut idle = ACCEPT_SOON;
    while !stop.load(Ordering::SeqCst) {
        conns.retain(|c| !c.is_finished());
        if active.load(Ordering::SeqCst) >= MAX_CONNS {
            std::thread::sleep(POLL);
            continue;
        }
        match listener.accept() {
            Ok((stream, peer)) => {
                idle = ACCEPT_SOON;
                let (pod, stop, mine) = (pod.to_string(), stop.clone(), active.clone());
                active.fetch_add(1, Ordering::SeqCst);
                let spawned =
                    std::thread::Builder::new()
                        .name("tcp-conn".into())
                        .spawn(move || {
                            let _ = serve_conn(stream, peer, &pod, &stop);
                            mine.fetch_sub(1, Ordering::SeqCst);
                        });
                match spawned {
                    Ok(h) => conns.push(h),
                    Err(_) => {
                        active.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(idle);
                idle = (idle * 2).min(POLL);
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

/// Answers lines until the peer closes, the connection idles past [`IDLE`],
/// or the pod stops.
fn serve_conn(
    stream: TcpStream,
    peer: SocketAddr,
    pod: &str,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut last = Instant::now();
    while !stop.load(Ordering::SeqCst) && last.elapsed() < IDLE {
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => {
                // the peer closed; a last line without its newline still counts
                if !line.is_empty() {
                    reply_tcp(&mut writer, &line, pod, peer)?;
                }
                return Ok(());
            }
            Ok(_) if line.ends_with(b"\n") || line.len() >= MAX_LINE => {
                reply_tcp(&mut writer, &line, pod, peer)?;
                line.clear();
                last = Instant::now();
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn reply_tcp(w: &mut TcpStream, line: &[u8], pod: &str, peer: SocketAddr) -> std::io::Result<()> {
    let text = String::from_utf8_lossy(&line[..line.len().min(MAX_LINE)]);
    let mut out = answer(&text, pod, peer);
    out.push('\n');
    w.write_all(out.as_bytes())
}

fn serve_udp(socket: UdpSocket, pod: &str, stop: &AtomicBool) {
    if socket.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        match socket.recv_from(&mut buf) {
            Ok((n, peer)) => {
                let text = String::from_utf8_lossy(&buf[..n.min(MAX_LINE)]);
                let mut out = answer(&text, pod, peer);
                out.push('\n');
                let _ = socket.send_to(out.as_bytes(), peer);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "[::ffff:10.1.2.3]:40000".parse().unwrap()
    }

    #[test]
    fn hostname_is_the_pods_name() {
        assert_eq!(answer("hostname\n", "web-1", peer()), "web-1");
        assert_eq!(answer("hostname\r\n", "web-1", peer()), "web-1");
    }

    #[test]
    fn clientip_is_the_peer_with_ipv4_unmapped() {
        assert_eq!(answer("clientip", "p", peer()), "10.1.2.3:40000");
        let v6: SocketAddr = "[fd00::5]:7".parse().unwrap();
        assert_eq!(answer("clientip\n", "p", v6), "[fd00::5]:7");
    }

    #[test]
    fn anything_else_is_echoed() {
        assert_eq!(answer("hello there\n", "p", peer()), "hello there");
        assert_eq!(answer("", "p", peer()), "");
        assert_eq!(answer("Hostname\n", "p", peer()), "Hostname");
    }

    #[test]
    fn protocols_are_the_apis_spelling() {
        assert_eq!(Proto::parse("TCP"), Some(Proto::Tcp));
        assert_eq!(Proto::parse("UDP"), Some(Proto::Udp));
        assert_eq!(Proto::parse("SCTP"), None);
    }

    #[test]
    fn servers_answer_over_tcp_and_udp_on_loopback_and_stop() {
        // port 0 would not tell us the port; pick free ones first
        let tcp_port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let udp_port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = Servers::start(
            None,
            "pod-a",
            &[(tcp_port, Proto::Tcp), (udp_port, Proto::Udp)],
        )
        .unwrap();
        let mut c = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"hostname\nping\n").unwrap();
        let mut r = BufReader::new(c);
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        assert_eq!(l, "pod-a\n");
        l.clear();
        r.read_line(&mut l).unwrap();
        assert_eq!(l, "ping\n");

        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        u.send_to(b"clientip\n", ("127.0.0.1", udp_port)).unwrap();
        let mut buf = [0u8; 100];
        let n = u.recv(&mut buf).unwrap();
        let me = u.local_addr().unwrap();
        assert_eq!(std::str::from_utf8(&buf[..n]).unwrap(), format!("{me}\n"));

        let started = Instant::now();
        s.stop();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(TcpStream::connect(("127.0.0.1", tcp_port)).is_err());
    }
}
