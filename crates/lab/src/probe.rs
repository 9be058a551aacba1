//! TCP reachability between namespaces, in-process: a listener bound inside
//! one namespace, a connect from inside another. Sockets keep the namespace
//! they were made in, so only the bind and the connect run on a namespace
//! thread.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use weft_datapath::netns::run_in;

/// Binds a listener on `addr:0` inside `netns`.
pub fn listen_in(netns: &Path, addr: IpAddr) -> anyhow::Result<TcpListener> {
    run_in(netns, move || TcpListener::bind(SocketAddr::new(addr, 0)))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_context(|| format!("binding {addr} in {}", netns.display()))
}

/// Connects from `netns` to `to`, sends a token and expects it echoed by a
/// one-shot echo on `listener`. Bounded by `timeout`.
pub fn tcp_roundtrip(from: &Path, listener: &TcpListener, timeout: Duration) -> anyhow::Result<()> {
    let to = listener.local_addr()?;
    listener.set_nonblocking(false)?;
    let server = listener.try_clone()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = server.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf)?;
        s.write_all(&buf[..n])
    });
    let result = run_in(from, move || -> std::io::Result<()> {
        let mut s = TcpStream::connect_timeout(&to, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"weft-probe")?;
        let mut buf = [0u8; 10];
        s.read_exact(&mut buf)?;
        if &buf != b"weft-probe" {
            return Err(std::io::Error::other("echo mismatch"));
        }
        Ok(())
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Err(e) = result {
        // unblock the accept so the echo thread ends
        let _ = run_in(from, move || {
            TcpStream::connect_timeout(&to, Duration::from_millis(200))
        });
        let _ = echo.join();
        bail!("tcp {} from {}: {e}", to, from.display());
    }
    echo.join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))?
        .with_context(|| format!("echo on {to}"))?;
    Ok(())
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
    let listener = listen_in(to_netns, addr)?;
    let to = listener.local_addr()?;
    let accept = std::thread::spawn(move || listener.accept().map(|(_, peer)| peer.ip()));
    let connected = run_in(from_netns, move || TcpStream::connect_timeout(&to, timeout))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    match connected {
        Ok(_stream) => accept
            .join()
            .map_err(|_| anyhow::anyhow!("accept thread panicked"))?
            .context("accept"),
        Err(e) => {
            // unblock the accept from inside the listener's namespace
            let _ = run_in(to_netns, move || {
                TcpStream::connect_timeout(&to, Duration::from_millis(200))
            });
            let _ = accept.join();
            bail!("tcp {to} from {}: {e}", from_netns.display())
        }
    }
}

/// Binds a listener on a fixed `addr` inside `netns`.
pub fn listen_on(netns: &Path, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    run_in(netns, move || TcpListener::bind(addr))
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_context(|| format!("binding {addr} in {}", netns.display()))
}

/// Like [`tcp_roundtrip`], but connects to `to` (a NATed address that leads
/// to `listener`) instead of the listener's own address.
pub fn tcp_roundtrip_to(
    from: &Path,
    listener: &TcpListener,
    to: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<()> {
    let server = listener.try_clone()?;
    let own = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = server.accept()?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf)?;
        s.write_all(&buf[..n])
    });
    let result = run_in(from, move || -> std::io::Result<()> {
        let mut s = TcpStream::connect_timeout(&to, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"weft-probe")?;
        let mut buf = [0u8; 10];
        s.read_exact(&mut buf)?;
        Ok(())
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Err(e) = result {
        let _ = TcpStream::connect_timeout(&own, Duration::from_millis(200));
        let _ = echo.join();
        bail!("tcp {to} from {}: {e}", from.display());
    }
    echo.join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))?
        .context("echo")?;
    Ok(())
}
