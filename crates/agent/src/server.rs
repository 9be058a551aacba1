//! The unix-socket server: one thread per connection, JSON in and out.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use weft_api::http::{read_request, write_response, Request};
use weft_api::paths;
use weft_cni_spec::{codes, CniError};

use crate::agent::Agent;

/// More concurrent requests than this are refused with "try again later"
/// instead of piling up threads.
const MAX_IN_FLIGHT: usize = 256;
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the socket root-only: its directory is created 0700 when missing and
/// the socket itself is 0600. A stale socket from a dead weftd is replaced; a
/// live one is an error (two agents must never share a node).
pub fn bind(socket: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
    }
    if socket.exists() {
        if UnixStream::connect(socket).is_ok() {
            anyhow::bail!(
                "another weftd is already serving {}; stop it first",
                socket.display()
            );
        }
        fs::remove_file(socket)?;
    }
    let listener = UnixListener::bind(socket)
        .map_err(|e| anyhow::anyhow!("cannot bind {}: {e}", socket.display()))?;
    fs::set_permissions(socket, fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub fn serve(listener: UnixListener, agent: Arc<Agent>) -> io::Result<()> {
    let in_flight = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            let err = CniError::new(codes::TRY_AGAIN_LATER, "weftd is overloaded; retry shortly");
            let _ = write_response(&stream, 503, &serde_json::to_vec(&err).unwrap_or_default());
            continue;
        }
        let agent = agent.clone();
        let counter = in_flight.clone();
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .stack_size(256 << 10)
            .spawn(move || {
                handle(stream, &agent);
                counter.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(error = %e, "cannot spawn a connection thread");
        }
    }
    Ok(())
}

fn handle(stream: UnixStream, agent: &Agent) {
    let start = std::time::Instant::now();
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let (status, body) = match read_request(&stream) {
        Ok(req) => {
            let reply = route(agent, &req);
            tracing::debug!(method = %req.method, path = %req.path, status = reply.0,
                micros = start.elapsed().as_micros() as u64, "served");
            reply
        }
        Err(e) => error_reply(
            400,
            CniError::new(codes::DECODE_FAILURE, format!("bad request: {e}")),
        ),
    };
    if let Err(e) = write_response(&stream, status, &body) {
        tracing::debug!(error = %e, "client went away before the reply");
    }
}

fn route(agent: &Agent, req: &Request) -> (u16, Vec<u8>) {
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", paths::CNI_ADD) => call(req, |r| agent.add(&r)),
        ("POST", paths::CNI_DEL) => call(req, |r| agent.del(&r).map(|()| weft_api::Empty {})),
        ("POST", paths::CNI_CHECK) => call(req, |r| agent.check(&r).map(|()| weft_api::Empty {})),
        ("POST", paths::CNI_GC) => call(req, |r| agent.gc(&r)),
        ("POST", paths::CNI_STATUS) => {
            call(req, |r| agent.cni_status(&r).map(|()| weft_api::Empty {}))
        }
        ("GET", paths::STATUS) => reply(agent.status()),
        ("GET", paths::ENDPOINTS) => reply(Ok(crate::k8s::endpoint_views(agent))),
        ("GET", paths::IPAM) => reply(agent.ipam_view()),
        ("GET", paths::IPAM_CHECK) => reply(agent.ipam_check()),
        (_, path) => error_reply(
            404,
            CniError::new(
                codes::INTERNAL,
                format!("no such endpoint {} {path}", req.method),
            ),
        ),
    }
}

fn call<Q: DeserializeOwned, R: Serialize>(
    req: &Request,
    f: impl FnOnce(Q) -> Result<R, CniError>,
) -> (u16, Vec<u8>) {
    match serde_json::from_slice::<Q>(&req.body) {
        Ok(q) => reply(f(q)),
        Err(e) => error_reply(
            400,
            CniError::new(
                codes::DECODE_FAILURE,
                format!("cannot decode request body: {e}"),
            ),
        ),
    }
}

fn reply<R: Serialize>(r: Result<R, CniError>) -> (u16, Vec<u8>) {
    match r {
        Ok(v) => (200, serde_json::to_vec(&v).expect("reply serialises")),
        Err(e) => {
            let status = if e.code == codes::TRY_AGAIN_LATER || e.code == codes::NOT_AVAILABLE {
                503
            } else if e.code < 100 {
                400
            } else {
                500
            };
            error_reply(status, e)
        }
    }
}

fn error_reply(status: u16, e: CniError) -> (u16, Vec<u8>) {
    (status, serde_json::to_vec(&e).expect("error serialises"))
}
