//! The unix-socket server: one thread per connection, JSON in and out, every
//! connection bounded in time and memory (see [`crate::admission`]).

use std::fs;
use std::io::{self, BufReader};
use std::net::Shutdown;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use weft_api::http::{self, read_body, read_head, write_response, DeadlineReader, Request};
use weft_api::paths;
use weft_cni_spec::{codes, CniError};

use crate::admission::{Admission, Cut, Lane, Limits, Refused, Ticket};
use crate::agent::Agent;

/// The socket's bounds. Memory held for requests is at most `body_budget`
/// plus `max_reading` heads of [`http::MAX_HEAD`]; threads are at most
/// `max_reading + cni_lane + other_lane`.
pub const LIMITS: Limits = Limits {
    // connections being read at once; the oldest is cut when one more comes
    max_reading: 256,
    // request bodies in memory at once, all connections together
    body_budget: 16 << 20,
    // CNI verbs served at once (each may wait on IPAM and the kernel)
    cni_lane: 128,
    // views, checks and whatever else is served at once
    other_lane: 16,
    // observers following flows at once (each holds a thread while it reads)
    stream_lane: 16,
};
/// The whole head must arrive within this of the connection being accepted
/// (weft-cni sends its request in one write).
pub const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// The whole request, body included, must arrive within this.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// A client that does not read its reply is dropped after this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest body of anything but a CNI verb (views take none; small
/// queries fit easily).
pub const MAX_OTHER_BODY: usize = 64 << 10;

// the bounds hold together: a CNI body always fits the budget (a request
// refused for want of budget is then always one that others crowd out)
const _: () = assert!(http::MAX_BODY <= LIMITS.body_budget);
const _: () = assert!(MAX_OTHER_BODY <= http::MAX_BODY);

/// A connection as the admission sees it: shutting it down wakes its reader.
struct Conn(Arc<UnixStream>);

impl Cut for Conn {
    fn cut(&self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

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

/// Serves until the listener fails: every accepted connection gets a thread
/// that reads under [`HEAD_DEADLINE`] and [`REQUEST_DEADLINE`] and the
/// [`LIMITS`] (see [`crate::admission`] for who is cut when they are reached).
pub fn serve(listener: UnixListener, agent: Arc<Agent>) -> io::Result<()> {
    let admission = Admission::new(LIMITS);
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        // shared rather than dup'ed: a connection costs one descriptor
        let stream = Arc::new(stream);
        let ticket = admission.admit(Conn(stream.clone()));
        let agent = agent.clone();
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .stack_size(256 << 10)
            .spawn(move || handle(stream, ticket, &agent));
        if let Err(e) = spawned {
            // the closure (and with it the ticket) is dropped: nothing is held
            tracing::warn!(error = %e, "cannot spawn a connection thread");
        }
    }
    Ok(())
}

fn handle(stream: Arc<UnixStream>, ticket: Ticket<Conn>, agent: &Agent) {
    let start = Instant::now();
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let (status, body) = match read(&stream, &ticket, start) {
        Ok((req, lane)) => match ticket.run(lane) {
            Ok(()) if lane == Lane::Stream => match open_stream(agent, &req) {
                // from here the request deadline is over: the stream lasts
                // while the observer reads (a write blocked for
                // WRITE_TIMEOUT ends it)
                Ok((hub, query)) => return stream_flows(&stream, &hub, &query),
                Err(reply) => reply,
            },
            Ok(()) => {
                let reply = route(agent, &req);
                if let Some(verb) = cni_verb(&req.path) {
                    crate::metrics::telemetry().observe_cni(verb, reply.0 == 200, start.elapsed());
                }
                tracing::debug!(method = %req.method, path = %req.path, status = reply.0,
                    micros = start.elapsed().as_micros() as u64, "served");
                reply
            }
            Err(e) => refused(e),
        },
        Err(reply) => reply,
    };
    if let Err(e) = write_response(&*stream, status, &body) {
        tracing::debug!(error = %e, "client went away before the reply");
    }
}

/// CNI verbs run in their own lane, streams in theirs.
fn lane_of(path: &str) -> Lane {
    match path {
        paths::CNI_ADD | paths::CNI_DEL | paths::CNI_CHECK | paths::CNI_GC | paths::CNI_STATUS => {
            Lane::Cni
        }
        paths::FLOWS => Lane::Stream,
        _ => Lane::Other,
    }
}

/// The metric label of a CNI verb's path.
fn cni_verb(path: &str) -> Option<&'static str> {
    Some(match path {
        paths::CNI_ADD => "add",
        paths::CNI_DEL => "del",
        paths::CNI_CHECK => "check",
        paths::CNI_GC => "gc",
        paths::CNI_STATUS => "status",
        _ => return None,
    })
}

/// A flows request, decoded, with the ring it reads; or the error reply.
fn open_stream(
    agent: &Agent,
    req: &Request,
) -> Result<(Arc<crate::flows::Hub>, weft_api::FlowQuery), (u16, Vec<u8>)> {
    if req.method != "POST" {
        return Err(error_reply(
            405,
            CniError::new(codes::INTERNAL, format!("{} takes POST", paths::FLOWS)),
        ));
    }
    let Some(hub) = agent.flows().hub() else {
        return Err(error_reply(
            503,
            CniError::new(
                codes::NOT_AVAILABLE,
                "flow observation is off on this node (weftd runs with --flow-buffer 0)",
            ),
        ));
    };
    let query = serde_json::from_slice(&req.body).map_err(|e| {
        error_reply(
            400,
            CniError::new(
                codes::DECODE_FAILURE,
                format!("cannot decode the flow query: {e}"),
            ),
        )
    })?;
    Ok((hub.clone(), query))
}

fn stream_flows(stream: &UnixStream, hub: &crate::flows::Hub, query: &weft_api::FlowQuery) {
    let start = Instant::now();
    let served = weft_api::stream::write_stream_head(stream)
        .and_then(|()| crate::flows::stream::serve(hub, query, stream, &|| true))
        .and_then(|n| weft_api::stream::write_stream_end(stream).map(|()| n));
    match served {
        Ok(n) => tracing::debug!(
            flows = n,
            follow = query.follow,
            millis = start.elapsed().as_millis() as u64,
            "served flows"
        ),
        Err(e) => tracing::debug!(error = %e, follow = query.follow,
            millis = start.elapsed().as_millis() as u64, "flow observer went away"),
    }
}

/// Reads one request within the deadlines, reserving its body from the
/// budget before any of it is read.
fn read(
    stream: &UnixStream,
    ticket: &Ticket<Conn>,
    start: Instant,
) -> Result<(Request, Lane), (u16, Vec<u8>)> {
    let mut reader =
        BufReader::with_capacity(4 << 10, DeadlineReader::new(stream, start + HEAD_DEADLINE));
    let head = read_head(&mut reader).map_err(|e| bad_read(&e))?;
    let lane = lane_of(&head.path);
    let limit = match lane {
        Lane::Cni => http::MAX_BODY,
        Lane::Other | Lane::Stream => MAX_OTHER_BODY,
    };
    if head.content_length > limit {
        return Err(error_reply(
            413,
            CniError::new(
                codes::DECODE_FAILURE,
                format!(
                    "body of {} bytes exceeds the limit of {limit} for {}",
                    head.content_length, head.path
                ),
            ),
        ));
    }
    ticket.reserve(head.content_length).map_err(refused)?;
    reader.get_mut().set_deadline(start + REQUEST_DEADLINE);
    let body = read_body(&mut reader, head.content_length).map_err(|e| bad_read(&e))?;
    Ok((
        Request {
            method: head.method,
            path: head.path,
            body,
        },
        lane,
    ))
}

fn bad_read(e: &http::HttpError) -> (u16, Vec<u8>) {
    if http::is_timeout(e) {
        error_reply(
            408,
            CniError::new(
                codes::IO_FAILURE,
                format!(
                    "request not received in time (head within {HEAD_DEADLINE:?}, all within {REQUEST_DEADLINE:?}); send it in one go"
                ),
            ),
        )
    } else {
        error_reply(
            400,
            CniError::new(codes::DECODE_FAILURE, format!("bad request: {e}")),
        )
    }
}

fn refused(e: Refused) -> (u16, Vec<u8>) {
    error_reply(
        503,
        CniError::new(
            codes::TRY_AGAIN_LATER,
            format!("weftd is overloaded ({e}); retry shortly"),
        ),
    )
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
        ("GET", paths::POLICY) => reply(Ok(crate::policy::list(agent.policy()))),
        ("POST", paths::POLICY_SHOW) => call(req, |r| crate::policy::show(agent.policy(), &r)),
        ("POST", paths::POLICY_EXPLAIN) => {
            call(req, |r| crate::policy::explain(agent.policy(), &r))
        }
        ("POST", paths::POLICY_MATRIX) => {
            call(req, |r| crate::policy::matrix::serve(agent.policy(), &r))
        }
        ("POST", paths::POLICY_PREVIEW) => call(req, |r| {
            crate::policy::preview::serve(agent.policy(), agent.flows(), &r)
        }),
        ("GET", paths::SERVICES) => reply(Ok(agent.services().view())),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cni_verb_and_nothing_else_takes_the_cni_lane() {
        for p in [
            paths::CNI_ADD,
            paths::CNI_DEL,
            paths::CNI_CHECK,
            paths::CNI_GC,
            paths::CNI_STATUS,
        ] {
            assert_eq!(lane_of(p), Lane::Cni, "{p}");
        }
        for p in [
            paths::STATUS,
            paths::ENDPOINTS,
            paths::IPAM,
            paths::IPAM_CHECK,
            paths::SERVICES,
            paths::POLICY,
            "/metrics",
            "/v1/cni/add/",
        ] {
            assert_eq!(lane_of(p), Lane::Other, "{p}");
        }
        // streams take neither: a lane of their own
        assert_eq!(lane_of(paths::FLOWS), Lane::Stream);
        assert_eq!(lane_of("/v1/flows/"), Lane::Other);
    }
}
