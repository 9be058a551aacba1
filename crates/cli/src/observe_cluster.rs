//! `weft observe --cluster`: every node of a real cluster, dialled over TLS.
//!
//! The Node objects give each node's InternalIP; each weftd serves its flows
//! there (`weftd --flows-listen`). The CLI checks the server certificate
//! against the CA the user gives (`--ca`; the certificate must name the
//! node's address) and sends the kubeconfig's bearer token, which weftd has
//! the API server review (RBAC: `get` on the non-resource URL /weft/flows).
//! The streams are merged by time as for a lab. The CLI merges rather than
//! a relay: no extra component to run, and each node filters its own flows
//! so only matching ones cross the network.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use weft_api::http::HttpError;
use weft_api::stream::{stream_on, Streamed};

use crate::observe::Target;

/// The port `weftd --flows-listen` uses in deploy/kubernetes.
pub const DEFAULT_PORT: u16 = 9965;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach one node's weftd over TLS.
pub struct Remote {
    pub addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    token: String,
}

/// Trusts exactly the certificates in `ca` (PEM).
pub fn client_config(ca: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("reading the CA {}", ca.display()))?
    {
        let c = c.with_context(|| format!("parsing the CA {}", ca.display()))?;
        roots
            .add(c)
            .with_context(|| format!("the CA {} is not a usable certificate", ca.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("{} holds no certificate (PEM)", ca.display());
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// One target per Node with an InternalIP, at `port`, trusting `ca` and
/// presenting `token`.
pub fn targets(
    nodes: Vec<(String, IpAddr)>,
    port: u16,
    ca: &Path,
    token: String,
) -> anyhow::Result<Vec<Target>> {
    if nodes.is_empty() {
        anyhow::bail!("the cluster lists no Node with an InternalIP");
    }
    let tls = client_config(ca)?;
    Ok(nodes
        .into_iter()
        .map(|(node, ip)| Target {
            socket: PathBuf::new(),
            remote: Some(Arc::new(Remote {
                addr: SocketAddr::new(ip, port),
                tls: tls.clone(),
                token: token.clone(),
            })),
            node,
        })
        .collect())
}

/// The cluster's targets from a kubeconfig (or kube's inference), with a
/// token from `token_file` or else the kubeconfig's.
pub fn from_cluster(
    kubeconfig: Option<&Path>,
    port: u16,
    ca: Option<&Path>,
    token_file: Option<&Path>,
) -> anyhow::Result<Vec<Target>> {
    let ca =
        ca.context("--cluster needs --ca FILE: the CA that signed the weftds' --flows-tls-cert")?;
    let source = match kubeconfig {
        Some(p) => weft_k8s::Source::Kubeconfig(p.to_path_buf()),
        None => weft_k8s::Source::Infer,
    };
    let token = match token_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading the token {}", f.display()))?
            .trim()
            .to_string(),
        None => weft_k8s::access::bearer_token(&source)?.context(
            "the kubeconfig carries no bearer token (client certificates and exec plugins cannot be passed on); give --token-file",
        )?,
    };
    let nodes = weft_k8s::access::node_addresses(&source).context("listing the cluster's nodes")?;
    targets(nodes, port, ca, token)
}

/// Streams one request to `r` (see [`weft_api::stream::stream`]).
pub fn stream(
    r: &Remote,
    method: &str,
    path: &str,
    body: &[u8],
    idle: Duration,
    on_line: impl FnMut(&[u8]) -> bool,
) -> Result<Streamed, HttpError> {
    let connect = |e: std::io::Error| HttpError::Connect {
        path: r.addr.to_string(),
        source: e,
    };
    let tcp = TcpStream::connect_timeout(&r.addr, CONNECT_TIMEOUT).map_err(connect)?;
    tcp.set_read_timeout(Some(idle))?;
    tcp.set_write_timeout(Some(idle))?;
    let name = ServerName::IpAddress(r.addr.ip().into());
    let conn = rustls::ClientConnection::new(r.tls.clone(), name)
        .map_err(|e| HttpError::Io(std::io::Error::other(e)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let headers = format!("Authorization: Bearer {}\r\n", r.token);
    stream_on(Tls(&mut tls), method, path, &headers, body, on_line)
}

/// A TLS stream whose failed handshake says what to check.
struct Tls<'a, S: Read + Write>(&'a mut S);

/// The node's certificate did not check out against `--ca`.
#[derive(Debug)]
struct Untrusted(rustls::Error);

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the node's certificate does not check out against --ca ({}): pass the cluster's CA, the one that signed the weftds' --flows-tls-cert (each certificate must name its node's address)",
            self.0
        )
    }
}

impl std::error::Error for Untrusted {}

fn explain(e: std::io::Error) -> std::io::Error {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(t) => std::io::Error::other(Untrusted(t.clone())),
        None => e,
    }
}

/// What to tell the user when reading `r` failed.
pub fn describe(r: &Remote, e: &HttpError) -> String {
    let untrusted = match e {
        HttpError::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<Untrusted>()),
        _ => None,
    };
    match untrusted {
        Some(u) => format!("{}: {u}", r.addr),
        None => format!(
            "{}: {e} (does weftd there run with --flows-listen?)",
            r.addr
        ),
    }
}

/// A refusal's words, with its HTTP status (401: the token; 403: RBAC).
pub fn refusal(status: u16, msg: &str) -> String {
    let reason = match status {
        401 => "401 Unauthorized, the API server's TokenReview",
        403 => "403 Forbidden, the API server's SubjectAccessReview",
        503 => "503 Service Unavailable",
        _ => "",
    };
    if reason.is_empty() {
        format!("weftd refused the reader ({status}): {msg}")
    } else {
        format!("weftd refused the reader ({reason}): {msg}")
    }
}

impl<S: Read + Write> Read for Tls<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf).map_err(explain)
    }
}

impl<S: Read + Write> Write for Tls<'_, S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(explain)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(explain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_their_status_and_which_review_said_no() {
        let m = refusal(403, "alice may not read flows");
        assert!(
            m.contains("403 Forbidden") && m.contains("SubjectAccessReview"),
            "{m}"
        );
        assert!(m.ends_with("alice may not read flows"), "{m}");
        assert!(refusal(401, "x").contains("TokenReview"));
        assert_eq!(refusal(418, "x"), "weftd refused the reader (418): x");
    }

    #[test]
    fn an_untrusted_certificate_says_to_pass_the_clusters_ca() {
        let r = Remote {
            addr: "198.18.0.10:9965".parse().unwrap(),
            tls: client_config_for_test(),
            token: String::new(),
        };
        let e = HttpError::Io(explain(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature),
        )));
        let m = describe(&r, &e);
        assert!(m.starts_with("198.18.0.10:9965: "), "{m}");
        assert!(m.contains("pass the cluster's CA"), "{m}");
        assert!(!m.contains("--flows-listen?"), "{m}");
        let other = HttpError::Io(std::io::Error::other("connection reset"));
        assert!(describe(&r, &other).contains("does weftd there run with --flows-listen?"));
    }

    fn client_config_for_test() -> Arc<rustls::ClientConfig> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        )
    }
}
