//! Just enough HTTP/1.1 for a local unix socket: one request per connection,
//! `Content-Length` bodies, no chunking, no keep-alive. Both ends are ours, but
//! the server still treats every byte as untrusted: sizes are capped, memory
//! grows only with the bytes that actually arrived, and every malformed input
//! is an error, never a panic.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Largest body either side accepts.
pub const MAX_BODY: usize = 4 << 20;
/// Largest request/status line or header line.
const MAX_LINE: usize = 8 << 10;
/// Largest head (request or status line plus all headers) in total, so a
/// head costs at most this much however its lines are cut.
pub const MAX_HEAD: usize = 16 << 10;
const MAX_HEADERS: usize = 64;
/// Bodies are read into memory this much at a time: a peer that announces a
/// large body and sends little costs only what it sent.
const BODY_CHUNK: usize = 64 << 10;

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
    let mut head_left = MAX_HEAD;
    let status_line = read_line(&mut reader, &mut head_left)?;
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
    let (len, _) = read_headers(&mut reader, &mut head_left, false)?;
    let body = read_body(&mut reader, len)?;
    Ok(Response { status, body })
}

/// The request line and the one header weftd acts on: enough to decide how
/// much the body may be before any of it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    pub path: String,
    pub content_length: usize,
}

/// Reads one request from a server-side connection (head, then body).
pub fn read_request<R: Read>(stream: R) -> Result<Request, HttpError> {
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader)?;
    let body = read_body(&mut reader, head.content_length)?;
    Ok(Request {
        method: head.method,
        path: head.path,
        body,
    })
}

/// Reads the request line and headers, at most [`MAX_HEAD`] bytes of them.
pub fn read_head<R: BufRead>(reader: &mut R) -> Result<Head, HttpError> {
    let mut head_left = MAX_HEAD;
    let line = read_line(reader, &mut head_left)?;
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
    let (content_length, _) = read_headers(reader, &mut head_left, false)?;
    Ok(Head {
        method,
        path,
        content_length,
    })
}

/// Reads exactly `len` body bytes, growing the buffer only as bytes arrive.
pub fn read_body<R: Read>(reader: &mut R, len: usize) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::with_capacity(len.min(BODY_CHUNK));
    let got = reader.take(len as u64).read_to_end(&mut body)?;
    if got < len {
        return Err(HttpError::Malformed(format!(
            "body ended after {got} of {len} bytes"
        )));
    }
    Ok(body)
}

/// A reader on a unix stream that fails with `TimedOut` once `deadline`
/// passes, however the bytes trickle in: a read timeout alone restarts with
/// every byte, so a peer sending one byte a second would never time out.
pub struct DeadlineReader<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl<'a> DeadlineReader<'a> {
    pub fn new(stream: &'a UnixStream, deadline: Instant) -> Self {
        DeadlineReader { stream, deadline }
    }

    pub fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        match (&mut &*self.stream).read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::ErrorKind::TimedOut.into()),
            r => r,
        }
    }
}

/// Whether an error means the peer was too slow (a deadline passed).
pub fn is_timeout(e: &HttpError) -> bool {
    matches!(e, HttpError::Io(io) if matches!(io.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock))
}

/// Writes a JSON response and closes the exchange.
pub fn write_response<W: Write>(mut stream: W, status: u16, body: &[u8]) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
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

/// Reads one line of at most [`MAX_LINE`] bytes, charged to `head_left`.
pub(crate) fn read_line<R: BufRead>(
    reader: &mut R,
    head_left: &mut usize,
) -> Result<String, HttpError> {
    let mut buf = Vec::new();
    let cap = MAX_LINE.min(*head_left);
    let n = reader.take(cap as u64 + 1).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(HttpError::Malformed(
            "connection closed before a full message".into(),
        ));
    }
    if n > cap || !buf.ends_with(b"\n") {
        return Err(HttpError::Malformed(format!(
            "line too long or truncated (lines up to {MAX_LINE} bytes, a head up to {MAX_HEAD})"
        )));
    }
    *head_left -= n;
    buf.pop();
    if buf.ends_with(b"\r") {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| HttpError::Malformed("line is not utf-8".into()))
}

/// Reads headers up to the blank line and returns the Content-Length (0 when
/// absent) and whether the body is chunked, which only a streamed reply may
/// be (`chunked_ok`); requests never are.
pub(crate) fn read_headers<R: BufRead>(
    reader: &mut R,
    head_left: &mut usize,
    chunked_ok: bool,
) -> Result<(usize, bool), HttpError> {
    let mut len = 0usize;
    let mut chunked = false;
    for _ in 0..=MAX_HEADERS {
        let line = read_line(reader, head_left)?;
        if line.is_empty() {
            return Ok((len, chunked));
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
            if chunked_ok && value.trim().eq_ignore_ascii_case("chunked") {
                chunked = true;
                continue;
            }
            return Err(HttpError::Malformed(
                "transfer-encoding is not supported".into(),
            ));
        }
    }
    Err(HttpError::Malformed(format!(
        "more than {MAX_HEADERS} headers"
    )))
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
    fn a_head_is_capped_in_total_not_only_per_line() {
        // four header lines of 6 KiB each: every line fits, the head does not
        let fat = format!("X: {}\r\n", "a".repeat(6 << 10)).repeat(4);
        let raw = format!("GET / HTTP/1.1\r\n{fat}\r\n");
        assert!(matches!(
            read_request(raw.as_bytes()),
            Err(HttpError::Malformed(_))
        ));
        let two = format!("X: {}\r\n", "a".repeat(6 << 10)).repeat(2);
        assert!(read_request(format!("GET / HTTP/1.1\r\n{two}\r\n").as_bytes()).is_ok());
    }

    #[test]
    fn an_announced_body_costs_only_what_arrived() {
        let raw = format!("POST /x HTTP/1.1\r\nContent-Length: {MAX_BODY}\r\n\r\nabc");
        let mut r = BufReader::new(raw.as_bytes());
        let head = read_head(&mut r).unwrap();
        assert_eq!(head.content_length, MAX_BODY);
        let err = read_body(&mut r, head.content_length).unwrap_err();
        assert!(err.to_string().contains("after 3 of"), "{err}");
        let mut big = BufReader::new(&b"0123456789"[..]);
        assert_eq!(read_body(&mut big, 4).unwrap(), b"0123");
    }

    #[test]
    fn a_trickling_peer_meets_the_deadline() {
        let (server, mut client) = UnixStream::pair().unwrap();
        let start = Instant::now();
        let feeder = std::thread::spawn(move || {
            // one byte every 50 ms, never a full line, for at most 2 s
            for _ in 0..40 {
                if client.write_all(b"G").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let mut r = BufReader::new(DeadlineReader::new(
            &server,
            start + Duration::from_millis(300),
        ));
        let err = read_head(&mut r).unwrap_err();
        let took = start.elapsed();
        assert!(is_timeout(&err), "{err}");
        assert!(took < Duration::from_millis(1000), "took {took:?}");
        drop(r);
        drop(server);
        feeder.join().unwrap();
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
