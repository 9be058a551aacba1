//! Just enough HTTP/1.1 for a local unix socket: one request per connection,
//! `Content-Length` bodies, no chunking, no keep-alive. Both ends are ours, but
//! the server still treats every byte as untrusted: sizes are capped and every
//! malformed input is an error, never a panic.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Largest body either side accepts.
pub const MAX_BODY: usize = 4 << 20;
/// Largest request/status line or header line.
const MAX_LINE: usize = 8 << 10;
const MAX_HEADERS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("i/o on the agent socket: {0}")]
    Io(#[from] io::Error),
    #[error("malformed http: {0}")]
    Malformed(String),
    #[error("body of {0} bytes exceeds the limit of {MAX_BODY}")]
    TooLarge(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Sends one request over the unix socket at `socket` and reads the reply.
pub fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Response, HttpError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| HttpError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut msg = Vec::with_capacity(body.len() + 128);
    write!(
        msg,
        "{method} {path} HTTP/1.1\r\nHost: weftd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    msg.extend_from_slice(body);
    stream.write_all(&msg)?;
    let mut reader = BufReader::new(stream);
    let status_line = read_line(&mut reader)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let status = match (version.starts_with("HTTP/1."), status) {
        (true, Some(s)) => s,
        _ => {
            return Err(HttpError::Malformed(format!(
                "bad status line {status_line:?}"
            )))
        }
    };
    let len = read_headers(&mut reader)?;
    let body = read_body(&mut reader, len)?;
    Ok(Response { status, body })
}

/// Reads one request from a server-side connection.
pub fn read_request<R: Read>(stream: R) -> Result<Request, HttpError> {
    let mut reader = BufReader::new(stream);
    let line = read_line(&mut reader)?;
    let mut parts = line.split(' ');
    let (method, path, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(p), Some(v), None) if !m.is_empty() && p.starts_with('/') => (m, p, v),
        _ => return Err(HttpError::Malformed(format!("bad request line {line:?}"))),
    };
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed(format!(
            "unsupported version {version:?}"
        )));
    }
    let (method, path) = (method.to_string(), path.to_string());
    let len = read_headers(&mut reader)?;
    let body = read_body(&mut reader, len)?;
    Ok(Request { method, path, body })
}

/// Writes a JSON response and closes the exchange.
pub fn write_response<W: Write>(mut stream: W, status: u16, body: &[u8]) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut msg = Vec::with_capacity(body.len() + 96);
    write!(
        msg,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    msg.extend_from_slice(body);
    stream.write_all(&msg)?;
    stream.flush()
}

fn read_line<R: BufRead>(reader: &mut R) -> Result<String, HttpError> {
    let mut buf = Vec::new();
    let n = reader
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(HttpError::Malformed(
            "connection closed before a full message".into(),
        ));
    }
    if n > MAX_LINE || !buf.ends_with(b"\n") {
        return Err(HttpError::Malformed("line too long or truncated".into()));
    }
    buf.pop();
    if buf.ends_with(b"\r") {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| HttpError::Malformed("line is not utf-8".into()))
}

/// Reads headers up to the blank line and returns the Content-Length (0 when absent).
fn read_headers<R: BufRead>(reader: &mut R) -> Result<usize, HttpError> {
    let mut len = 0usize;
    for _ in 0..=MAX_HEADERS {
        let line = read_line(reader)?;
        if line.is_empty() {
            return Ok(len);
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::Malformed(format!("bad header {line:?}")));
        };
        if name.eq_ignore_ascii_case("content-length") {
            len = value
                .trim()
                .parse()
                .map_err(|_| HttpError::Malformed(format!("bad content-length {value:?}")))?;
            if len > MAX_BODY {
                return Err(HttpError::TooLarge(len));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::Malformed(
                "transfer-encoding is not supported".into(),
            ));
        }
    }
    Err(HttpError::Malformed(format!(
        "more than {MAX_HEADERS} headers"
    )))
}

fn read_body<R: Read>(reader: &mut R, len: usize) -> Result<Vec<u8>, HttpError> {
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trip() {
        let raw = b"POST /v1/cni/add HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        let req = read_request(&raw[..]).unwrap();
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/v1/cni/add");
        assert_eq!(req.body, b"{}");
    }

    #[test]
    fn hostile_requests_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            b"",
            b"GET\r\n\r\n",
            b"GET / HTTP/1.1 extra\r\n\r\n",
            b"GET nopath HTTP/1.1\r\n\r\n",
            b"GET / SPDY/3\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: banana\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort",
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
            b"\xff\xfe / HTTP/1.1\r\n\r\n",
        ];
        for raw in cases {
            assert!(
                read_request(*raw).is_err(),
                "accepted {:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_LINE + 10));
        assert!(read_request(long.as_bytes()).is_err());
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(read_request(many.as_bytes()).is_err());
    }

    #[test]
    fn response_is_well_formed() {
        let mut out = Vec::new();
        write_response(&mut out, 200, b"{\"a\":1}").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("Content-Length: 7\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"a\":1}"));
    }
}
