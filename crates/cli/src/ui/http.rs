//! Just enough HTTP/1.1 for one page on a TCP port: a request head of at most
//! 16 KiB, a small body, one request per connection. Every byte is treated
//! as untrusted; a malformed request is an error, never a panic.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

const MAX_HEAD: usize = 16 << 10;
/// The largest body the page sends (a matrix request of 64 pod names).
pub const MAX_BODY: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The raw query string (after `?`), empty without one.
    pub query: String,
    pub host: Option<String>,
    pub body: Vec<u8>,
}

/// Parses a head (through the blank line) and returns the request without
/// its body, and the body length it announced.
pub fn parse_head(head: &[u8]) -> Result<(Request, usize), String> {
    let text = std::str::from_utf8(head).map_err(|_| "head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let mut words = first.split(' ');
    let (method, target, version) = match (words.next(), words.next(), words.next(), words.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && t.starts_with('/') => (m, t, v),
        _ => return Err(format!("bad request line {first:?}")),
    };
    if !version.starts_with("HTTP/1.") {
        return Err(format!("unsupported version {version:?}"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (mut host, mut len) = (None, 0usize);
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((k, v)) = line.split_once(':') else {
            return Err(format!("bad header line {line:?}"));
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("host") {
            host = Some(v.to_string());
        } else if k.eq_ignore_ascii_case("content-length") {
            len = v.parse().map_err(|_| format!("bad Content-Length {v:?}"))?;
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked bodies are not taken: send Content-Length".into());
        }
    }
    if len > MAX_BODY {
        return Err(format!("a body of {len} bytes is over {MAX_BODY}"));
    }
    Ok((
        Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            host,
            body: Vec::new(),
        },
        len,
    ))
}

/// Reads one request from `r` (a socket with a read timeout set).
pub fn read_request<R: Read>(r: &mut R) -> Result<Request, String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("request head over {MAX_HEAD} bytes"));
        }
        match r.read(&mut chunk) {
            Ok(0) => return Err("connection closed before the head ended".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    };
    let (mut req, len) = parse_head(&buf[..end])?;
    let mut body = buf.split_off(end);
    if body.len() < len {
        r.take((len - body.len()) as u64)
            .read_to_end(&mut body)
            .map_err(|e| e.to_string())?;
    }
    if body.len() < len {
        return Err(format!("body ended after {} of {len} bytes", body.len()));
    }
    body.truncate(len);
    req.body = body;
    Ok(req)
}

/// Whether a request's Host names this server. A page on loopback must not
/// answer other names: a site the browser visits could point its own name
/// at 127.0.0.1 (DNS rebinding) and read the flows through the browser.
pub fn host_ok(host: Option<&str>, bound: SocketAddr, loopback_only: bool) -> bool {
    if !loopback_only {
        return true;
    }
    let Some(host) = host else { return false };
    let port = bound.port().to_string();
    let name = match host.rsplit_once(':') {
        Some((n, p)) if p == port => n,
        _ => return false,
    };
    matches!(name, "localhost" | "127.0.0.1" | "[::1]") || name == bound.ip().to_string()
}

pub fn write_response<W: Write>(
    mut w: W,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };
    // no caching: the page and its data are live; nothing may frame it
    write!(
        w,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )?;
    w.write_all(body)?;
    w.flush()
}

/// `%2F` and `+` decoded; invalid escapes kept as they are.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// `a=1&b=x%2Fy&a=2` as (key, value) pairs in order.
pub fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reads_with_query_host_and_body() {
        let raw = b"POST /api/matrix?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 4\r\n\r\nabcdEXTRA";
        let r = read_request(&mut &raw[..]).unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/api/matrix");
        assert_eq!(r.query, "x=1");
        assert_eq!(r.host.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(r.body, b"abcd");
    }

    #[test]
    fn malformed_and_oversized_requests_are_refused() {
        assert!(read_request(&mut &b"GET / HTTP/1.1\r\nHost: a"[..]).is_err());
        assert!(read_request(&mut &b"GET nope HTTP/1.1\r\n\r\n"[..]).is_err());
        assert!(read_request(&mut &b"GET / SPDY/3\r\n\r\n"[..]).is_err());
        let big = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert!(read_request(&mut big.as_bytes()).is_err());
        let short = b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc";
        assert!(read_request(&mut &short[..]).is_err());
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(read_request(&mut &chunked[..]).is_err());
        let endless = vec![b'a'; MAX_HEAD + 4096];
        assert!(read_request(&mut &endless[..]).is_err());
    }

    #[test]
    fn loopback_answers_only_its_own_names() {
        let bound: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        for ok in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080"] {
            assert!(host_ok(Some(ok), bound, true), "{ok}");
        }
        for bad in ["evil.example:8080", "127.0.0.1:80", "localhost", ""] {
            assert!(!host_ok(Some(bad), bound, true), "{bad}");
        }
        assert!(!host_ok(None, bound, true));
        assert!(host_ok(Some("node1.example:8080"), bound, false));
    }

    #[test]
    fn queries_decode() {
        assert_eq!(
            query_pairs("pod=x%2Fa&verdict=DROPPED&label=app+x&bad=%zz&&k"),
            vec![
                ("pod".into(), "x/a".into()),
                ("verdict".into(), "DROPPED".into()),
                ("label".into(), "app x".into()),
                ("bad".into(), "%zz".into()),
                ("k".into(), "".into()),
            ]
        );
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%C3%A9"), "é");
        assert_eq!(percent_decode("%é1"), "%é1");
    }
}
