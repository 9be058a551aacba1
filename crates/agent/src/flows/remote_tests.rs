//! The TLS flow server end to end on loopback: certificates made here (a CA
//! and a server certificate naming 127.0.0.1, in a temp dir removed after),
//! a fixed gate standing in for the API server's reviews, and the same
//! client the CLI uses (`weft_api::stream::stream_on` over rustls).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use weft_api::stream::{stream_on, Streamed};
use weft_api::{FlowLine, FlowQuery};
use weft_bpf_abi::{FlowEvent, AF_INET, VERDICT_DROPPED};

use super::*;
use crate::flows::{Hub, Stored};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA and a server certificate for 127.0.0.1 signed by it; the CA's PEM.
fn certs(dir: &Dir, tag: &str) -> (String, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (c, k) = (
        dir.0.join(format!("{tag}.crt")),
        dir.0.join(format!("{tag}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (ca.pem(), c, k)
}

struct FixedGate;

impl Gate for FixedGate {
    fn admit(&self, token: &str) -> Result<String, Refusal> {
        match token {
            "reader" => Ok("alice".into()),
            "stranger" => Err(Refusal::Forbidden { user: "bob".into() }),
            _ => Err(Refusal::Unauthenticated(String::new())),
        }
    }
}

fn client(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn ask(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    token: &str,
) -> Result<(Streamed, Vec<FlowLine>), weft_api::http::HttpError> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(tls, name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let body = serde_json::to_vec(&FlowQuery::default()).unwrap();
    let mut lines = Vec::new();
    let r = stream_on(
        &mut s,
        "POST",
        paths::FLOWS,
        &format!("Authorization: Bearer {token}\r\n"),
        &body,
        |l| {
            lines.push(serde_json::from_slice(l).unwrap());
            true
        },
    )?;
    Ok((r, lines))
}

#[test]
fn readers_the_gate_admits_get_flows_over_tls_and_others_are_refused() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = Dir(std::env::temp_dir().join(format!("weft-flows-tls-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let (ca, cert, key) = certs(&dir, "node");
    let (other_ca, _, _) = certs(&dir, "other");
    let hub = Hub::new("n1", 16);
    hub.push([Stored {
        ev: FlowEvent {
            family: AF_INET,
            proto: 6,
            verdict: VERDICT_DROPPED,
            ..Default::default()
        },
        wall_ns: 1,
        src: None,
        dst: None,
        policy: None,
    }]);
    let tls = tls_config(&cert, &key).unwrap();
    let addr = start(
        "127.0.0.1:0".parse().unwrap(),
        tls,
        Arc::new(FixedGate),
        hub,
    )
    .unwrap();

    let (r, lines) = ask(addr, client(&ca), "reader").unwrap();
    assert_eq!(r, Streamed::Done);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(matches!(&lines[0], FlowLine::Flow(f) if f.node == "n1"));

    let refused = |token: &str| match ask(addr, client(&ca), token).unwrap() {
        (Streamed::Refused(resp), _) => {
            let e: CniError = serde_json::from_slice(&resp.body).unwrap();
            (resp.status, e.msg)
        }
        other => panic!("{token} was not refused: {other:?}"),
    };
    let (status, msg) = refused("stranger");
    assert_eq!(status, 403);
    assert!(
        msg.contains("bob may not read flows") && msg.contains("/weft/flows"),
        "{msg}"
    );
    let (status, msg) = refused("forged");
    assert_eq!(status, 401);
    assert!(msg.contains("did not accept the token"), "{msg}");

    // a client trusting another CA refuses weftd's certificate
    let err = ask(addr, client(&other_ca), "reader").unwrap_err();
    assert!(format!("{err}").contains("certificate"), "{err}");

    // no token at all
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(client(&ca), name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    s.write_all(b"POST /v1/flows HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
        .unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");
    assert!(raw.contains("no bearer token"), "{raw}");
}
