//! One observer: the stored flows a query asks for, then (with `follow`)
//! new ones as the reader adds them, as newline-delimited JSON chunks. The
//! observer holds no queue of its own: it follows the ring with a cursor,
//! and is told how many flows it missed if it fell behind by more than the
//! ring holds.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use weft_api::stream::write_chunk;
use weft_api::{Flow, FlowLine, FlowQuery, LostFlows};

use super::decode::render;
use super::{Hub, Stored};

/// Longest silence on a followed stream: a blank line then, so a client
/// that went away is noticed (the write fails) and the client knows weftd
/// is alive.
pub const KEEPALIVE: Duration = Duration::from_secs(1);
/// Lines are sent in chunks of about this size.
const CHUNK: usize = 32 << 10;

fn wanted(q: &FlowQuery, f: &Flow) -> bool {
    q.since_unix_nano.is_none_or(|t| f.time_unix_nano >= t) && q.filter.matches(f)
}

/// Renders `flows` and keeps those `q` wants.
pub fn select(hub: &Hub, q: &FlowQuery, flows: &[Stored]) -> Vec<Flow> {
    flows
        .iter()
        .map(|s| render(s, hub.node()))
        .filter(|f| wanted(q, f))
        .collect()
}

struct Lines<W> {
    w: W,
    buf: Vec<u8>,
    sent: usize,
}

impl<W: Write> Lines<W> {
    fn line(&mut self, l: &FlowLine) -> io::Result<()> {
        serde_json::to_writer(&mut self.buf, l).map_err(io::Error::other)?;
        self.buf.push(b'\n');
        self.sent += 1;
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        write_chunk(&mut self.w, &self.buf)?;
        self.buf.clear();
        Ok(())
    }
}

/// Writes what `q` asks for as chunks (the caller wrote the head and ends
/// the body). Following ends when a write fails (the client left) or
/// `keep_going` says so. Returns the flows sent.
pub fn serve<W: Write>(
    hub: &Hub,
    q: &FlowQuery,
    w: W,
    keep_going: &dyn Fn() -> bool,
) -> io::Result<usize> {
    let mut out = Lines {
        w,
        buf: Vec::new(),
        sent: 0,
    };
    let (stored, mut cursor) = hub.snapshot();
    let mut flows = select(hub, q, &stored);
    drop(stored);
    if let Some(n) = q.last {
        flows.drain(..flows.len().saturating_sub(n));
    }
    for f in flows {
        out.line(&FlowLine::Flow(Box::new(f)))?;
    }
    out.flush()?;
    if !q.follow {
        return Ok(out.sent);
    }
    let mut quiet_since = Instant::now();
    while keep_going() {
        let batch = hub.after(cursor, KEEPALIVE);
        cursor = batch.cursor;
        if batch.missed > 0 {
            out.line(&FlowLine::Lost(LostFlows {
                node: hub.node().to_string(),
                flows: batch.missed,
            }))?;
        }
        for f in select(hub, q, &batch.flows) {
            out.line(&FlowLine::Flow(Box::new(f)))?;
        }
        if out.buf.is_empty() {
            if quiet_since.elapsed() >= KEEPALIVE {
                write_chunk(&mut out.w, b"\n")?;
                quiet_since = Instant::now();
            }
        } else {
            out.flush()?;
            quiet_since = Instant::now();
        }
    }
    Ok(out.sent)
}
