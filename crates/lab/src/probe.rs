//! TCP reachability between namespaces, in-process: a listener bound inside
//! one namespace, a connect from inside another. Sockets keep the namespace
//! they were made in, so only the bind and the connect run on a namespace
//! thread. Every wait is bounded: a probe that cannot connect fails after its
//! timeout and leaves no thread behind. [`probe`] is `weft lab probe`: one
//! TCP or UDP exchange that says how it ended (connected, refused, reset,
//! timed out).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use weft_datapath::netns::run_in;

const TOKEN: &[u8; 10] = b"weft-probe";

/// Binds a listener on `addr:0` inside `netns`.
pub fn listen_in(netns: &Path, addr: IpAddr) -> anyhow::Result<TcpListener> {
    listen_on(netns, SocketAddr::new(addr, 0))
}

/// Binds a listener on a fixed `addr` inside `netns`.
pub fn listen_on(netns: &Path, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    run_in(netns, move || TcpListener::bind(addr))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_context(|| format!("binding {addr} in {}", netns.display()))
}

/// Accepts one connection on `listener` until `deadline`, echoes what it
/// reads, and returns the peer's address. Polls instead of blocking, so it
/// ends by itself when nobody comes.
fn echo_once(listener: TcpListener, deadline: Instant) -> std::io::Result<IpAddr> {
    listener.set_nonblocking(true)?;
    let (mut s, peer) = loop {
        match listener.accept() {
            Ok(conn) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "nobody connected",
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    };
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf)?;
    s.write_all(&buf[..n])?;
    Ok(peer.ip())
}

/// Connects from `from` to `to` (the listener's own address, or one that NAT
/// leads to it), sends a token, expects it echoed; returns the source address
/// the listener saw.
fn roundtrip(
    from: &Path,
    listener: &TcpListener,
    to: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<IpAddr> {
    let server = listener.try_clone()?;
    let deadline = Instant::now() + timeout + Duration::from_secs(1);
    let echo = std::thread::spawn(move || echo_once(server, deadline));
    let client = run_in(from, move || -> std::io::Result<()> {
        let mut s = TcpStream::connect_timeout(&to, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(TOKEN)?;
        let mut buf = [0u8; 10];
        s.read_exact(&mut buf)?;
        if &buf != TOKEN {
            return Err(std::io::Error::other("echo mismatch"));
        }
        Ok(())
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let served = echo
        .join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))?;
    if let Err(e) = client {
        bail!("tcp {to} from {}: {e}", from.display());
    }
    served.with_context(|| format!("echo on {to}"))
}

/// Connects from `from` to `listener`'s own address and expects an echo.
pub fn tcp_roundtrip(from: &Path, listener: &TcpListener, timeout: Duration) -> anyhow::Result<()> {
    roundtrip(from, listener, listener.local_addr()?, timeout).map(|_| ())
}

/// Connects from `from` to `to` (a NATed address that leads to `listener`,
/// e.g. a host port) and expects an echo.
pub fn tcp_roundtrip_to(
    from: &Path,
    listener: &TcpListener,
    to: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<()> {
    roundtrip(from, listener, to, timeout).map(|_| ())
}

/// Convenience: listen in `to_netns` on `addr` and round-trip from `from_netns`.
pub fn tcp_check(
    from_netns: &Path,
    to_netns: &Path,
    addr: IpAddr,
    timeout: Duration,
) -> anyhow::Result<()> {
    let l = listen_in(to_netns, addr)?;
    tcp_roundtrip(from_netns, &l, timeout)
}

/// Connects from `from_netns` to `addr` (a listener bound in `to_netns`) and
/// returns the source address the listener saw: tells whether NAT happened.
pub fn tcp_peer(
    from_netns: &Path,
    to_netns: &Path,
    addr: IpAddr,
    timeout: Duration,
) -> anyhow::Result<IpAddr> {
    let l = listen_in(to_netns, addr)?;
    roundtrip(from_netns, &l, l.local_addr()?, timeout)
}

/// How one `weft lab probe` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Connected (UDP: an answer came back); with a line sent, its reply.
    Connected { reply: Option<String> },
    /// Nobody listens: TCP RST to the SYN, or ICMP port unreachable for UDP.
    Refused,
    /// The connection was reset after it was made.
    Reset,
    /// Nothing came back in time (dropped, filtered, or no route answer).
    TimedOut,
    /// Any other failure (no route, network unreachable, ...).
    Failed(String),
}

impl Outcome {
    pub fn connected(&self) -> bool {
        matches!(self, Outcome::Connected { .. })
    }

    /// One line for people and tests: `connected`, `refused`, `reset`,
    /// `timed out`, or `failed: <why>`.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Connected { .. } => "connected".into(),
            Outcome::Refused => "refused".into(),
            Outcome::Reset => "reset".into(),
            Outcome::TimedOut => "timed out".into(),
            Outcome::Failed(why) => format!("failed: {why}"),
        }
    }
}

/// Which kind of failure an I/O error of a probe is.
pub fn classify(e: &std::io::Error) -> Outcome {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => Outcome::Refused,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => Outcome::Reset,
        K::TimedOut | K::WouldBlock => Outcome::TimedOut,
        _ => Outcome::Failed(e.to_string()),
    }
}

/// The transport a probe uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
}

/// The line a UDP probe sends when told none (any line is echoed back).
pub const UDP_DEFAULT_LINE: &str = "weft-probe";

/// Probes `to` from inside `from`: TCP connects (and, with `send`, sends
/// that line and reads one line back); UDP sends `send` (or
/// [`UDP_DEFAULT_LINE`]) and waits for the answer. Every wait ends after
/// `timeout`.
pub fn probe(
    from: &Path,
    to: SocketAddr,
    transport: Transport,
    timeout: Duration,
    send: Option<&str>,
) -> anyhow::Result<Outcome> {
    let send = send.map(str::to_string);
    let out = run_in(from, move || match transport {
        Transport::Tcp => probe_tcp(to, timeout, send.as_deref()),
        Transport::Udp => probe_udp(to, timeout, send.as_deref().unwrap_or(UDP_DEFAULT_LINE)),
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(out)
}

fn probe_tcp(to: SocketAddr, timeout: Duration, send: Option<&str>) -> Outcome {
    let mut s = match TcpStream::connect_timeout(&to, timeout) {
        Ok(s) => s,
        Err(e) => return classify(&e),
    };
    let Some(line) = send else {
        return Outcome::Connected { reply: None };
    };
    let exchange = (|| -> std::io::Result<String> {
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.write_all(format!("{line}\n").as_bytes())?;
        read_line(&mut s)
    })();
    match exchange {
        Ok(reply) => Outcome::Connected { reply: Some(reply) },
        Err(e) => classify(&e),
    }
}

/// Reads up to the first newline (or the peer's close), at most 64 KiB.
fn read_line(s: &mut TcpStream) -> std::io::Result<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            if got.is_empty() {
                return Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
            }
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.contains(&b'\n') || got.len() > 65536 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

fn probe_udp(to: SocketAddr, timeout: Duration, line: &str) -> Outcome {
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let exchange = (|| -> std::io::Result<String> {
        let s = std::net::UdpSocket::bind(any)?;
        // connected: an ICMP port unreachable comes back as ECONNREFUSED
        s.connect(to)?;
        s.set_read_timeout(Some(timeout))?;
        s.send(format!("{line}\n").as_bytes())?;
        let mut buf = vec![0u8; 65536];
        let n = s.recv(&mut buf)?;
        let text = String::from_utf8_lossy(&buf[..n]);
        Ok(text.lines().next().unwrap_or_default().to_string())
    })();
    match exchange {
        Ok(reply) => Outcome::Connected { reply: Some(reply) },
        Err(e) => classify(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind as K;

    #[test]
    fn errors_say_which_failure_it_was() {
        let e = |k: K| classify(&std::io::Error::from(k));
        assert_eq!(e(K::ConnectionRefused), Outcome::Refused);
        assert_eq!(e(K::ConnectionReset), Outcome::Reset);
        assert_eq!(e(K::TimedOut), Outcome::TimedOut);
        assert_eq!(e(K::WouldBlock), Outcome::TimedOut, "a read timeout");
        assert!(matches!(
            classify(&std::io::Error::from_raw_os_error(libc::ENETUNREACH)),
            Outcome::Failed(_)
        ));
        assert_eq!(Outcome::Refused.describe(), "refused");
        assert_eq!(Outcome::TimedOut.describe(), "timed out");
        assert!(Outcome::Connected { reply: None }.connected());
    }

    #[test]
    fn loopback_probes_connect_refuse_and_echo() {
        let me = Path::new("/proc/self/ns/net");
        let t = Duration::from_secs(2);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).unwrap();
            s.write_all(&buf[..n]).unwrap();
        });
        let out = probe(me, addr, Transport::Tcp, t, Some("hello")).unwrap();
        server.join().unwrap();
        assert_eq!(
            out,
            Outcome::Connected {
                reply: Some("hello".into())
            }
        );
        // the listener is gone: nobody listens on that port any more
        assert_eq!(
            probe(me, addr, Transport::Tcp, t, None).unwrap(),
            Outcome::Refused
        );
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let uaddr = u.local_addr().unwrap();
        drop(u);
        assert_eq!(
            probe(me, uaddr, Transport::Udp, t, None).unwrap(),
            Outcome::Refused
        );
    }
}
