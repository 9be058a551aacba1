//! Streamed replies: a request whose answer goes on (`weft observe -f`).
//! The server sends a 200 head with `Transfer-Encoding: chunked` and then
//! newline-delimited JSON, one or more whole lines per chunk, and a blank
//! line as a keep-alive when it has nothing to say for a while (so both
//! ends notice the other is gone). An error is an ordinary reply with a
//! `Content-Length` body, as for every other request.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::http::{read_body, read_headers, read_line, HttpError, Response, MAX_BODY, MAX_HEAD};

/// Writes the head of a streamed reply.
pub fn write_stream_head<W: Write>(mut w: W) -> io::Result<()> {
    w.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    w.flush()
}

/// Writes one chunk (nothing for empty data: an empty chunk ends the body).
pub fn write_chunk<W: Write>(mut w: W, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut msg = Vec::with_capacity(data.len() + 16);
    write!(msg, "{:x}\r\n", data.len())?;
    msg.extend_from_slice(data);
    msg.extend_from_slice(b"\r\n");
    w.write_all(&msg)?;
    w.flush()
}

/// Ends a streamed reply.
pub fn write_stream_end<W: Write>(mut w: W) -> io::Result<()> {
    w.write_all(b"0\r\n\r\n")?;
    w.flush()
}

/// How a [`stream`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Streamed {
    /// The server ended the reply.
    Done,
    /// The callback asked to stop.
    Stopped,
    /// The server refused with an ordinary reply (an error status).
    Refused(Response),
}

/// Sends one request and hands every non-empty line of the streamed reply
/// to `on_line` until the server ends it or `on_line` returns false. A
/// server silent for longer than `idle` is an error (it sends keep-alives).
pub fn stream(
    socket: &Path,
    method: &str,
    path: &str,
    body: &[u8],
    idle: Duration,
    on_line: impl FnMut(&[u8]) -> bool,
) -> Result<Streamed, HttpError> {
    let mut conn = UnixStream::connect(socket).map_err(|source| HttpError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    conn.set_read_timeout(Some(idle))?;
    conn.set_write_timeout(Some(idle))?;
    stream_on(&mut conn, method, path, "", body, on_line)
}

/// [`stream`] over a connection the caller opened (TLS to a node's weftd,
/// its timeouts set), with `headers` (whole `Name: value\r\n` lines, e.g.
/// an Authorization) added to the request.
pub fn stream_on<C: Read + Write>(
    conn: C,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
    mut on_line: impl FnMut(&[u8]) -> bool,
) -> Result<Streamed, HttpError> {
    let mut conn = conn;
    let mut msg = Vec::with_capacity(body.len() + 128 + headers.len());
    write!(
        msg,
        "{method} {path} HTTP/1.1\r\nHost: weftd\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    msg.extend_from_slice(body);
    conn.write_all(&msg)?;
    conn.flush()?;
    let mut reader = BufReader::new(conn);
    let mut head_left = MAX_HEAD;
    let status_line = read_line(&mut reader, &mut head_left)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| HttpError::Malformed(format!("bad status line {status_line:?}")))?;
    let (len, chunked) = read_headers(&mut reader, &mut head_left, true)?;
    if !chunked {
        let body = read_body(&mut reader, len)?;
        return Ok(Streamed::Refused(Response { status, body }));
    }
    read_chunks(&mut reader, &mut on_line)
}

/// Reads chunks and hands out whole lines; a line may span chunks.
fn read_chunks<R: BufRead>(
    reader: &mut R,
    on_line: &mut impl FnMut(&[u8]) -> bool,
) -> Result<Streamed, HttpError> {
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let mut size_left = MAX_HEAD;
        let size_line = read_line(reader, &mut size_left)?;
        let hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| HttpError::Malformed(format!("bad chunk size {size_line:?}")))?;
        if size == 0 {
            // trailers (none are sent) up to the blank line
            while !read_line(reader, &mut size_left)?.is_empty() {}
            return Ok(Streamed::Done);
        }
        if size > MAX_BODY || pending.len() + size > MAX_BODY {
            return Err(HttpError::TooLarge(pending.len() + size));
        }
        let start = pending.len();
        let got = reader.take(size as u64).read_to_end(&mut pending)?;
        if got < size {
            return Err(HttpError::Malformed("chunk cut short".into()));
        }
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(HttpError::Malformed("chunk not followed by CRLF".into()));
        }
        // hand out every whole line; keep the partial tail
        let mut from = 0;
        let mut i = start;
        while let Some(nl) = pending[i..].iter().position(|&b| b == b'\n') {
            let line = &pending[from..i + nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() && !on_line(line) {
                return Ok(Streamed::Stopped);
            }
            from = i + nl + 1;
            i = from;
        }
        pending.drain(..from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(raw: &[u8]) -> (Result<Streamed, HttpError>, Vec<String>) {
        let mut got = Vec::new();
        let r = read_chunks(&mut BufReader::new(raw), &mut |l: &[u8]| {
            got.push(String::from_utf8_lossy(l).into_owned());
            true
        });
        (r, got)
    }

    #[test]
    fn lines_across_chunks_and_keepalives() {
        let mut raw = Vec::new();
        write_chunk(&mut raw, b"{\"a\":1}\n{\"b\"").unwrap();
        write_chunk(&mut raw, b":2}\n").unwrap();
        write_chunk(&mut raw, b"\n").unwrap();
        write_chunk(&mut raw, b"").unwrap();
        write_chunk(&mut raw, b"{\"c\":3}\n").unwrap();
        write_stream_end(&mut raw).unwrap();
        let (r, got) = lines_of(&raw);
        assert_eq!(r.unwrap(), Streamed::Done);
        assert_eq!(got, [r#"{"a":1}"#, r#"{"b":2}"#, r#"{"c":3}"#]);
    }

    #[test]
    fn hostile_chunks_are_errors() {
        for raw in [
            &b"zz\r\nab\r\n"[..],
            b"5\r\nab",
            b"2\r\nabXX0\r\n\r\n",
            b"",
            b"fffffffff\r\n",
        ] {
            assert!(
                lines_of(raw).0.is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn a_refusal_is_an_ordinary_reply_and_the_callback_can_stop() {
        let dir = std::env::temp_dir().join(format!("weft-api-stream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s");
        let _ = std::fs::remove_file(&sock);
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            for (i, c) in l.incoming().take(2).enumerate() {
                let c = c.unwrap();
                let _ = crate::http::read_request(&c).unwrap();
                if i == 0 {
                    crate::http::write_response(&c, 503, b"{\"msg\":\"busy\"}").unwrap();
                } else {
                    write_stream_head(&c).unwrap();
                    for n in 0..100 {
                        if write_chunk(&c, format!("{n}\n").as_bytes()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let t = Duration::from_secs(2);
        let r = stream(&sock, "POST", "/x", b"{}", t, |_| true).unwrap();
        assert!(matches!(r, Streamed::Refused(Response { status: 503, .. })));
        let mut n = 0;
        let r = stream(&sock, "POST", "/x", b"{}", t, |_| {
            n += 1;
            n < 3
        })
        .unwrap();
        assert_eq!((r, n), (Streamed::Stopped, 3));
        server.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
