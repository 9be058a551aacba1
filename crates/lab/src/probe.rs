//! TCP reachability between namespaces, in-process: a listener bound inside
//! one namespace, a connect from inside another. Sockets keep the namespace
//! they were made in, so only the bind and the connect run on a namespace
//! thread. Every wait is bounded: a probe that cannot connect fails after its
//! timeout and leaves no thread behind.

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
