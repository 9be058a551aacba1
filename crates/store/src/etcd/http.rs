//! A minimal HTTP/1.1 client on `std::net::TcpStream`, enough for etcd's
//! gRPC-gateway: `POST` with a JSON body, responses with `Content-Length` or
//! chunked transfer-encoding, keep-alive connections, and an incremental body
//! reader for streaming responses (watch) that survives read timeouts.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// One `http://host:port` endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// As the caller gave it, for messages.
    pub url: String,
    /// `host:port`, for the `Host` header and resolution.
    pub authority: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = if let Some(r) = url.strip_prefix("http://") {
            r
        } else if url.starts_with("https://") {
            return Err(format!("{url}: https is not supported (plain HTTP only)"));
        } else if url.contains("://") {
            return Err(format!("{url}: unsupported scheme"));
        } else {
            url
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(format!("{url}: expected http://host:port"));
        }
        let authority = if authority.rsplit_once(':').is_some_and(|(_, p)| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !authority.ends_with(']')
        }) {
            authority.to_string()
        } else {
            format!("{authority}:2379")
        };
        Ok(Endpoint {
            url: url.to_string(),
            authority,
        })
    }

    fn addrs(&self) -> io::Result<Vec<SocketAddr>> {
        Ok(self.authority.to_socket_addrs()?.collect())
    }

    /// Connects within `timeout` (trying every resolved address).
    pub fn connect(&self, timeout: Duration) -> io::Result<TcpStream> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in self.addrs()? {
            match TcpStream::connect_timeout(&addr, timeout.max(Duration::from_millis(1))) {
                Ok(s) => {
                    s.set_nodelay(true)?;
                    return Ok(s);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Writes a `POST` request with a JSON body and extra headers.
pub fn write_post(
    stream: &mut TcpStream,
    ep: &Endpoint,
    path: &str,
    body: &[u8],
    deadline: Instant,
) -> io::Result<()> {
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Grpc-Metadata-hasleader: true\r\nContent-Length: {}\r\n\r\n",
        ep.authority,
        body.len()
    );
    let mut req = Vec::with_capacity(head.len() + body.len());
    req.extend_from_slice(head.as_bytes());
    req.extend_from_slice(body);
    stream.write_all(&req)?;
    stream.flush()
}

/// The time left until `deadline`, or a `TimedOut` error.
pub fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(io::ErrorKind::TimedOut, "deadline exceeded"))
    } else {
        Ok(left)
    }
}

/// Whether an I/O error is a read timeout (the two kinds platforms use).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// How the body of a response is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data(usize),
    DataEnd,
    Trailers,
    Done,
}

/// A response being read: status and headers parsed, body decoded
/// incrementally into `body`.
pub struct Response {
    pub stream: TcpStream,
    pub status: u16,
    pub keep_alive: bool,
    /// Raw bytes read but not yet decoded.
    raw: Vec<u8>,
    framing: Framing,
    chunk: ChunkState,
    /// Decoded body bytes not yet taken by the caller.
    pub body: Vec<u8>,
    /// Whether any byte of the response arrived (a stale keep-alive
    /// connection fails before that).
    pub got_bytes: bool,
    done: bool,
}

impl Response {
    /// Reads the status line and headers, waiting at most until `deadline`.
    pub fn read_head(stream: TcpStream, deadline: Instant) -> io::Result<Response> {
        let mut r = Response {
            stream,
            status: 0,
            keep_alive: true,
            raw: Vec::new(),
            framing: Framing::UntilClose,
            chunk: ChunkState::Size,
            body: Vec::new(),
            got_bytes: false,
            done: false,
        };
        let end = loop {
            if let Some(i) = find(&r.raw, b"\r\n\r\n") {
                break i;
            }
            if r.raw.len() > 64 * 1024 {
                return Err(bad("response headers too large"));
            }
            r.stream.set_read_timeout(Some(remaining(deadline)?))?;
            if r.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the response",
                ));
            }
        };
        let head = String::from_utf8_lossy(&r.raw[..end]).into_owned();
        r.raw.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.split_whitespace();
        let version = parts.next().unwrap_or("");
        r.status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
        r.keep_alive = version == "HTTP/1.1";
        let mut framing = Framing::UntilClose;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                let n = value
                    .parse()
                    .map_err(|_| bad("bad content-length header"))?;
                if framing != Framing::Chunked {
                    framing = Framing::Length(n);
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                if value.to_ascii_lowercase().contains("chunked") {
                    framing = Framing::Chunked;
                }
            } else if name.eq_ignore_ascii_case("connection") {
                if value.eq_ignore_ascii_case("close") {
                    r.keep_alive = false;
                } else if value.eq_ignore_ascii_case("keep-alive") {
                    r.keep_alive = true;
                }
            }
        }
        if framing == Framing::UntilClose {
            r.keep_alive = false;
        }
        r.framing = framing;
        r.decode()?;
        Ok(r)
    }

    /// Reads the whole body until `deadline`.
    pub fn read_to_end(&mut self, deadline: Instant) -> io::Result<Vec<u8>> {
        while !self.done {
            self.stream.set_read_timeout(Some(remaining(deadline)?))?;
            self.read_more()?;
        }
        Ok(std::mem::take(&mut self.body))
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Reads once from the socket (with whatever read timeout is set) and
    /// decodes what arrived into `body`. A clean end of a body framed by the
    /// connection close sets done; an early close is an error.
    pub fn read_more(&mut self) -> io::Result<()> {
        if self.done {
            return Ok(());
        }
        if self.fill()? == 0 {
            if self.framing == Framing::UntilClose {
                self.body.append(&mut self.raw);
                self.done = true;
                return Ok(());
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed in the middle of a response",
            ));
        }
        self.decode()
    }

    /// Whether the connection can carry another request.
    pub fn reusable(&self) -> bool {
        self.done && self.keep_alive && self.raw.is_empty()
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut buf = [0u8; 16 * 1024];
        let n = self.stream.read(&mut buf)?;
        if n > 0 {
            self.got_bytes = true;
        }
        self.raw.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn decode(&mut self) -> io::Result<()> {
        match self.framing {
            Framing::UntilClose => self.body.append(&mut self.raw),
            Framing::Length(n) => {
                let take = n.min(self.raw.len());
                self.body.extend(self.raw.drain(..take));
                self.framing = Framing::Length(n - take);
                if n == take {
                    self.done = true;
                }
            }
            Framing::Chunked => self.decode_chunked()?,
        }
        Ok(())
    }

    fn decode_chunked(&mut self) -> io::Result<()> {
        loop {
            match self.chunk {
                ChunkState::Size => {
                    let Some(i) = find(&self.raw, b"\r\n") else {
                        return Ok(());
                    };
                    let line = String::from_utf8_lossy(&self.raw[..i]).into_owned();
                    self.raw.drain(..i + 2);
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(hex, 16)
                        .map_err(|_| bad(&format!("bad chunk size {line:?}")))?;
                    self.chunk = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(n) => {
                    if self.raw.is_empty() {
                        return Ok(());
                    }
                    let take = n.min(self.raw.len());
                    self.body.extend(self.raw.drain(..take));
                    self.chunk = if take == n {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(n - take)
                    };
                }
                ChunkState::DataEnd => {
                    if self.raw.len() < 2 {
                        return Ok(());
                    }
                    if &self.raw[..2] != b"\r\n" {
                        return Err(bad("chunk not followed by CRLF"));
                    }
                    self.raw.drain(..2);
                    self.chunk = ChunkState::Size;
                }
                ChunkState::Trailers => {
                    let Some(i) = find(&self.raw, b"\r\n") else {
                        return Ok(());
                    };
                    self.raw.drain(..i + 2);
                    if i == 0 {
                        self.chunk = ChunkState::Done;
                        self.done = true;
                    }
                }
                ChunkState::Done => return Ok(()),
            }
        }
    }

    /// Takes the next complete `\n`-terminated line of the body, if any.
    pub fn take_line(&mut self) -> Option<Vec<u8>> {
        let i = self.body.iter().position(|&b| b == b'\n')?;
        let mut line: Vec<u8> = self.body.drain(..=i).collect();
        line.pop();
        Some(line)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:2379").unwrap().authority,
            "127.0.0.1:2379"
        );
        assert_eq!(
            Endpoint::parse("http://etcd/").unwrap().authority,
            "etcd:2379"
        );
        assert_eq!(
            Endpoint::parse("10.0.0.1:4001").unwrap().authority,
            "10.0.0.1:4001"
        );
        assert!(Endpoint::parse("https://x:1").is_err());
        assert!(Endpoint::parse("http://").is_err());
    }
}
