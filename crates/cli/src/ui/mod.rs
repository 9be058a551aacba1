//! `weft ui`: one web page with the live flow table (`weft observe`'s
//! filters), a service map drawn from the flows, and the policy
//! reachability matrix of chosen pods. A page of vanilla JS and inline SVG
//! embedded in the binary (no build step), and a few JSON endpoints that
//! ask the node's weftd, or every weftd of a lab, over their sockets.
//!
//! Blocking and threaded like the rest of the CLI: a thread per request,
//! at most [`MAX_CONNECTIONS`] at once; nothing here needs an async
//! runtime, and the request parsing is a hundred lines (`http`).

mod api;
mod http;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use crate::observe::Target;
use crate::output::outln;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Requests served at once; more wait for a free thread to be refused.
const MAX_CONNECTIONS: usize = 32;
/// The whole request must arrive within this; each write too.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");

#[derive(Args, Debug, Clone)]
pub struct UiArgs {
    /// Address to serve the page on (port 0: any free port). Default
    /// 127.0.0.1:8080; the page shows pod names, labels and flows, so an
    /// address others can reach must be given here explicitly.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

pub fn run(targets: Vec<Target>, args: &UiArgs) -> anyhow::Result<ExitCode> {
    if targets.is_empty() {
        bail!("no weftd to ask");
    }
    // loopback unless the operator named another address: only an
    // explicit --listen chooses who else can reach the page
    let addr = args
        .listen
        .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("default address"));
    let listener = TcpListener::bind(addr)
        .with_context(|| format!("binding {addr}; pick a free port with --listen"))?;
    let bound = listener.local_addr()?;
    let loopback = bound.ip().is_loopback();
    if !loopback {
        eprintln!(
            "weft ui: serving on {bound}, reachable from other hosts: the page shows pod names, labels and flows"
        );
    }
    // scripts and tests read the port (with --listen …:0) from this line
    outln!("weft ui: serving http://{bound}/");
    let targets = Arc::new(targets);
    let busy = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        if busy.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            busy.fetch_sub(1, Ordering::SeqCst);
            let _ = http::write_response(&stream, 503, "text/plain", b"busy; retry\n");
            continue;
        }
        let (targets, done) = (targets.clone(), busy.clone());
        let spawned = std::thread::Builder::new()
            .name("ui".into())
            .spawn(move || {
                serve(stream, &targets, bound, loopback);
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            // the request (and its stream) went with the closure
            busy.fetch_sub(1, Ordering::SeqCst);
            eprintln!("weft ui: cannot start a thread; a request was dropped");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn json<T: serde::Serialize>(v: &T) -> (u16, &'static str, Vec<u8>) {
    (
        200,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn error(status: u16, msg: String) -> (u16, &'static str, Vec<u8>) {
    (
        status,
        "application/json",
        serde_json::to_vec(&serde_json::json!({ "error": msg })).unwrap_or_default(),
    )
}

/// A socket read that fails once `deadline` passes, however the bytes
/// trickle in (a read timeout alone restarts with every byte, and a slow
/// client would hold a thread for as long as it likes).
struct Deadline<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        (&mut &*self.stream).read(buf)
    }
}

fn serve(stream: TcpStream, targets: &[Target], bound: SocketAddr, loopback: bool) {
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut reader = Deadline {
        stream: &stream,
        deadline: Instant::now() + IO_TIMEOUT,
    };
    let (status, ctype, body) = match http::read_request(&mut reader) {
        Err(e) => error(400, e),
        Ok(req) if !http::host_ok(req.host.as_deref(), bound, loopback) => error(
            403,
            format!(
                "this page answers only to http://{bound}/ (asked as {:?}); open that address",
                req.host.as_deref().unwrap_or("")
            ),
        ),
        Ok(req) => route(&req, targets),
    };
    let _ = http::write_response(&stream, status, ctype, &body);
}

fn route(req: &http::Request, targets: &[Target]) -> (u16, &'static str, Vec<u8>) {
    let page = |ctype, text: &str| (200, ctype, text.as_bytes().to_vec());
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/") => page("text/html; charset=utf-8", INDEX_HTML),
        ("GET", "/app.js") => page("text/javascript; charset=utf-8", APP_JS),
        ("GET", "/style.css") => page("text/css; charset=utf-8", STYLE_CSS),
        ("GET", "/api/flows") => match api::flow_query(&http::query_pairs(&req.query)) {
            Ok(q) => json(&api::flows(targets, &q)),
            Err(e) => error(400, e),
        },
        ("GET", "/api/pods") => json(&api::pods(targets)),
        ("POST", "/api/matrix") => match api::matrix(targets, &req.body) {
            Ok(m) => json(&m),
            Err(e) => error(502, e),
        },
        (m, p) => error(404, format!("no such page {m} {p}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, query: &str) -> (u16, &'static str, Vec<u8>) {
        let req = http::Request {
            method: "GET".into(),
            path: path.into(),
            query: query.into(),
            host: None,
            body: Vec::new(),
        };
        route(&req, &[])
    }

    #[test]
    fn the_page_and_its_assets_are_served_and_nothing_else() {
        let (status, ctype, body) = get("/", "");
        assert_eq!((status, ctype), (200, "text/html; charset=utf-8"));
        let html = String::from_utf8(body).unwrap();
        for asset in ["/app.js", "/style.css"] {
            assert!(html.contains(asset), "{asset}");
            assert_eq!(get(asset, "").0, 200, "{asset}");
        }
        assert_eq!(get("/etc/passwd", "").0, 404);
        assert_eq!(get("/api/flows", "verdict=LOST").0, 400);
        // no node to ask: an empty answer naming none, not a failure
        let (status, _, body) = get("/api/flows", "verdict=DROPPED");
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["flows"], serde_json::json!([]));
    }
}
