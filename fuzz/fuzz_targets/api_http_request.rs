//! What weftd reads from a client of its socket: one HTTP/1.1 request
//! (request line, headers, `Content-Length` body). The bytes arrive in
//! pieces of fuzzer-chosen sizes, as a socket delivers them, so every read
//! boundary inside a line or a header is tried.
#![no_main]

use std::io::{self, Read};

use libfuzzer_sys::fuzz_target;
use weft_api::http::{read_request, write_response, MAX_BODY};

/// Hands out the input in chunks whose sizes come from the input's first
/// byte (0 = all at once).
struct Chunked<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.data.len().min(buf.len()).min(self.step);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|bytes: &[u8]| {
    let Some((&first, data)) = bytes.split_first() else {
        return;
    };
    let step = match first {
        0 => usize::MAX,
        n => usize::from(n),
    };
    if let Ok(req) = read_request(Chunked { data, step }) {
        assert!(req.body.len() <= MAX_BODY, "body over the limit accepted");
        assert!(req.path.starts_with('/'), "request path {:?}", req.path);
        // The agent answers every request it read; the answer must frame.
        let mut out = Vec::new();
        let _ = write_response(&mut out, 400, &req.body);
    }
});
