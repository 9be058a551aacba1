//! Flows over TLS for the cluster-wide view (`weftd --flows-listen ADDR
//! --flows-tls-cert F --flows-tls-key F`, off by default): the same
//! `POST /v1/flows` stream as the agent socket's, to readers that present a
//! bearer token the API server accepts and RBAC lets `get` the
//! non-resource URL `/weft/flows` (`weft_k8s::access`). `weft observe
//! --cluster` dials every node's weftd here and merges the streams.
//!
//! Each reader holds a thread while it reads; at most [`MAX_READERS`] at
//! once (the next is told weftd is busy). The head must arrive within
//! [`HEAD_DEADLINE`]; a token is reviewed once per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use weft_api::paths;
use weft_cni_spec::{codes, CniError};
use weft_k8s::access::{Refusal, Reviewer};

use super::Hub;

/// Readers streaming at once.
pub const MAX_READERS: usize = 16;
const HEAD_DEADLINE: Duration = Duration::from_secs(5);
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// A blocked write this long ends a stream (the reader went away).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 16 << 10;
const MAX_BODY: usize = 64 << 10;

/// Who may read, as the server asks: the API server's reviews in weftd, a
/// fixed answer in tests.
pub trait Gate: Send + Sync {
    fn admit(&self, token: &str) -> Result<String, Refusal>;
}

impl Gate for Reviewer {
    fn admit(&self, token: &str) -> Result<String, Refusal> {
        self.review(token, REVIEW_TIMEOUT)
    }
}

/// The TLS server's configuration from PEM files.
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading the certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing the certificate {}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate (PEM)", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key {} (PEM)", key.display()))?;
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not go together")?;
    Ok(Arc::new(cfg))
}

/// Binds `addr` and serves readers on threads of their own until the
/// process ends. Returns the bound address.
pub fn start(
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    gate: Arc<dyn Gate>,
    hub: Arc<Hub>,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .with_context(|| format!("binding the flows address {addr}; pick a free port"))?;
    let bound = listener.local_addr()?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("flows-tls".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(tcp) = conn else { continue };
                let (tls, gate, hub, active) =
                    (tls.clone(), gate.clone(), hub.clone(), active.clone());
                let spawned = std::thread::Builder::new()
                    .name("flows-reader".into())
                    .stack_size(256 << 10)
                    .spawn(move || serve(tcp, tls, gate.as_ref(), &hub, &active));
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot spawn a flow reader thread");
                }
            }
        })
        .context("spawning the flows listener")?;
    tracing::info!(addr = %bound, "serving flows over TLS to readers the cluster authorises");
    Ok(bound)
}

/// What a reader sent before the body.
struct Head {
    method: String,
    path: String,
    content_length: usize,
    token: Option<String>,
}

fn read_head<R: BufRead>(r: &mut R) -> Result<Head, String> {
    let mut left = MAX_HEAD;
    let mut line = String::new();
    let mut next = |line: &mut String| -> Result<(), String> {
        line.clear();
        let n = r
            .by_ref()
            .take(left as u64)
            .read_line(line)
            .map_err(|e| e.to_string())?;
        if n == 0 || !line.ends_with('\n') {
            return Err("the request head ended early or is too long".into());
        }
        left -= n;
        Ok(())
    };
    next(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = match (parts.next(), parts.next()) {
        (Some(m), Some(p)) => (m.to_string(), p.to_string()),
        _ => return Err(format!("bad request line {:?}", line.trim_end())),
    };
    let mut head = Head {
        method,
        path,
        content_length: 0,
        token: None,
    };
    loop {
        next(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            return Ok(head);
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(format!("bad header {l:?}"));
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            head.content_length = v.parse().map_err(|_| format!("bad Content-Length {v:?}"))?;
        } else if k.eq_ignore_ascii_case("authorization") {
            head.token = v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .map(|t| t.trim().to_string());
        }
    }
}

fn reply<W: Write>(mut w: W, status: u16, reason: &str, e: CniError) {
    let body = serde_json::to_vec(&e).unwrap_or_default();
    let _ = write!(
        w,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = w.write_all(&body);
    let _ = w.flush();
}

/// Releases a reader's slot when its thread ends, however it ends.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn serve(
    tcp: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    gate: &dyn Gate,
    hub: &Hub,
    active: &AtomicUsize,
) {
    let peer = tcp.peer_addr().ok();
    let _ = tcp.set_read_timeout(Some(HEAD_DEADLINE));
    let _ = tcp.set_write_timeout(Some(WRITE_TIMEOUT));
    let Ok(conn) = rustls::ServerConnection::new(tls) else {
        return;
    };
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let _slot = Slot(active);
    if active.fetch_add(1, Ordering::SeqCst) >= MAX_READERS {
        return reply(
            &mut stream,
            503,
            "Service Unavailable",
            CniError::new(
                codes::TRY_AGAIN_LATER,
                format!("weftd is busy: {MAX_READERS} flow readers already; try again later"),
            ),
        );
    }
    let mut reader = BufReader::new(&mut stream);
    let head = match read_head(&mut reader) {
        Ok(h) => h,
        Err(e) => {
            // a failed handshake (a client that does not trust our
            // certificate) ends here too
            tracing::debug!(?peer, error = %e, "flow reader: no request");
            drop(reader);
            return reply(
                &mut stream,
                400,
                "Bad Request",
                CniError::new(codes::DECODE_FAILURE, e),
            );
        }
    };
    let body = if head.content_length > MAX_BODY {
        Err(format!(
            "a flow query of {} bytes is too large",
            head.content_length
        ))
    } else {
        let mut b = vec![0u8; head.content_length];
        reader
            .read_exact(&mut b)
            .map(|()| b)
            .map_err(|e| e.to_string())
    };
    drop(reader);
    if head.method != "POST" || head.path != paths::FLOWS {
        return reply(
            &mut stream,
            404,
            "Not Found",
            CniError::new(
                codes::INTERNAL,
                format!("only POST {} is served here", paths::FLOWS),
            ),
        );
    }
    let Some(token) = head.token.filter(|t| !t.is_empty()) else {
        return reply(
            &mut stream,
            401,
            "Unauthorized",
            CniError::new(
                codes::INTERNAL,
                "no bearer token: send Authorization: Bearer TOKEN (weft observe --cluster uses the kubeconfig's)",
            ),
        );
    };
    let user = match gate.admit(&token) {
        Ok(u) => u,
        Err(r) => {
            tracing::info!(?peer, refusal = %r, "flow reader refused");
            let (status, reason) = match r {
                Refusal::Unauthenticated(_) => (401, "Unauthorized"),
                Refusal::Forbidden { .. } => (403, "Forbidden"),
                Refusal::Unavailable(_) => (503, "Service Unavailable"),
            };
            return reply(
                &mut stream,
                status,
                reason,
                CniError::new(codes::INTERNAL, r.to_string()),
            );
        }
    };
    let query: weft_api::FlowQuery =
        match body.and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())) {
            Ok(q) => q,
            Err(e) => {
                return reply(
                    &mut stream,
                    400,
                    "Bad Request",
                    CniError::new(
                        codes::DECODE_FAILURE,
                        format!("cannot decode the flow query: {e}"),
                    ),
                )
            }
        };
    tracing::debug!(?peer, user, follow = query.follow, "flow reader admitted");
    // from here the stream lasts while the reader reads
    let _ = stream.sock.set_read_timeout(None);
    let served = weft_api::stream::write_stream_head(&mut stream)
        .and_then(|()| super::stream::serve(hub, &query, &mut stream, &|| true))
        .and_then(|_| weft_api::stream::write_stream_end(&mut stream));
    if let Err(e) = served {
        tracing::debug!(?peer, error = %e, "flow reader went away");
    }
    stream.conn.send_close_notify();
    let _ = stream.flush();
}

#[cfg(test)]
#[path = "remote_tests.rs"]
mod remote_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_gives_the_token_and_the_body_length() {
        let raw = b"POST /v1/flows HTTP/1.1\r\nHost: n\r\nAuthorization: Bearer abc.def\r\nContent-Length: 12\r\n\r\n{}";
        let h = read_head(&mut &raw[..]).unwrap();
        assert_eq!((h.method.as_str(), h.path.as_str()), ("POST", "/v1/flows"));
        assert_eq!(h.content_length, 12);
        assert_eq!(h.token.as_deref(), Some("abc.def"));
        let no_token = b"POST /v1/flows HTTP/1.1\r\n\r\n";
        assert_eq!(read_head(&mut &no_token[..]).unwrap().token, None);
        assert!(read_head(&mut &b"POST /v1/flows HTTP/1.1\r\nX"[..]).is_err());
    }
}
