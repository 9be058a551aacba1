//! Liveness and readiness for the kubelet's probes (`--health-listen`),
//! plain HTTP on a loopback address (the DaemonSet runs on the host
//! network, so the probes name 127.0.0.1, as cilium's do).
//!
//! - `/healthz`: weftd serves its socket: a request through it is answered
//!   (whatever the answer). A datastore or API server that is away is not a
//!   reason to restart weftd, so neither is checked here.
//! - `/readyz`: weftd can do its job: the datastore answers (CNI STATUS) and,
//!   with Kubernetes, every watch has listed and is current.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use weft_api::StatusRequest;

use crate::agent::Agent;

const IO_TIMEOUT: Duration = Duration::from_secs(2);
const SOCKET_TIMEOUT: Duration = Duration::from_secs(3);

/// Binds `addr` and answers probes on a thread of its own until the
/// process ends.
pub fn start(addr: SocketAddr, agent: Arc<Agent>, socket: PathBuf) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("binding the health address {addr}"))?;
    std::thread::Builder::new()
        .name("health".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    // probes come every few seconds: one at a time is plenty
                    Ok(stream) => answer(stream, &agent, &socket),
                    Err(e) => tracing::debug!(error = %e, "health: accept failed"),
                }
            }
        })
        .context("spawning the health thread")?;
    tracing::info!(%addr, "answering liveness (/healthz) and readiness (/readyz) probes");
    Ok(())
}

fn answer(mut stream: TcpStream, agent: &Agent, socket: &std::path::Path) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut buf = [0u8; 1024];
    let mut len = 0;
    // the request line is all a probe needs; stop at the end of the headers
    while len < buf.len() {
        match stream.read(&mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                len += n;
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match path {
        "/healthz" => live(socket),
        "/readyz" => ready(agent),
        _ => (404, "not found: ask /healthz or /readyz".to_string()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}\n",
        body.len() + 1
    );
}

fn live(socket: &std::path::Path) -> (u16, String) {
    match weft_api::http::call(
        socket,
        "GET",
        weft_api::paths::ENDPOINTS,
        b"",
        SOCKET_TIMEOUT,
    ) {
        Ok(_) => (200, "ok".into()),
        Err(e) => (
            503,
            format!("weftd does not answer on {}: {e}", socket.display()),
        ),
    }
}

/// The readiness verdict: `None` when ready, else why not.
pub fn not_ready(agent: &Agent) -> Option<String> {
    if let Err(e) = agent.cni_status(&StatusRequest {
        network: String::new(),
    }) {
        return Some(e.msg);
    }
    agent.kubernetes().not_ready()
}

fn ready(agent: &Agent) -> (u16, String) {
    match not_ready(agent) {
        None => (200, "ready".into()),
        Some(why) => (503, why),
    }
}
