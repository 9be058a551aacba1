//! Reading a `BPF_MAP_TYPE_RINGBUF` from userspace.
//!
//! The kernel maps the ring in two parts: a consumer page we write (our read
//! position) and, read-only, a producer page (the kernel's write position)
//! followed by the data area mapped twice in a row, so a record that wraps
//! around the end is still one contiguous slice. Each record has an 8-byte
//! header: its length with a BUSY bit (still being written) and a DISCARD
//! bit (the program gave it up), then the data, padded to 8 bytes.
//!
//! Memory stays bounded on both sides: the ring's size is fixed when the map
//! is created, and [`RingBuf::drain`] hands each record to a callback as a
//! borrowed slice (no copy, no queue) and stops after `max` records. Events
//! the producer could not write (ring full) are never in the ring: programs
//! count them in a counter of their own (`weft_emit` in `bpf/lib/events.h`
//! counts them in the map the caller names), which the reader adds to what
//! it reports as lost.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{BpfError, Map};

/// `BPF_MAP_TYPE_RINGBUF`.
pub const MAP_TYPE_RINGBUF: u32 = 27;
const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HDR: u64 = 8;

/// What one [`RingBuf::drain`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Records handed to the callback.
    pub read: usize,
    /// Records the program reserved and then discarded.
    pub discarded: usize,
}

/// A reader of one ring buffer map. Holds its own fd and mappings, so it
/// outlives the [`Map`] it was made from.
#[derive(Debug)]
pub struct RingBuf {
    fd: OwnedFd,
    consumer: *mut u8,
    producer: *const u8,
    producer_len: usize,
    page: usize,
    mask: u64,
    name: String,
}

// SAFETY: the mappings are owned by this value alone and only touched
// through &mut self (drain) or atomics; moving it to another thread is fine.
unsafe impl Send for RingBuf {}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

fn mmap(fd: &OwnedFd, len: usize, prot: i32, off: usize) -> Result<*mut u8, i32> {
    // SAFETY: a fresh shared mapping of a ringbuf map fd at an address the
    // kernel picks; the result is checked against MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            off as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(p as *mut u8)
    }
}

impl RingBuf {
    /// Maps the ring of `map` (which must be a ring buffer).
    pub fn new(map: &Map) -> Result<Self, BpfError> {
        if map.def().map_type != MAP_TYPE_RINGBUF {
            return Err(BpfError::MapKind {
                map: map.name().to_string(),
                reason: "not a ring buffer",
            });
        }
        let fd = map
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| BpfError::Io {
                path: format!("dup of map {}", map.name()).into(),
                source,
            })?;
        let page = page_size();
        let size = map.def().max_entries as usize;
        let err = |e| BpfError::sys("mmap", format!("ring buffer {}", map.name()), e);
        let consumer = mmap(&fd, page, libc::PROT_READ | libc::PROT_WRITE, 0).map_err(err)?;
        let producer_len = page + 2 * size;
        let producer = match mmap(&fd, producer_len, libc::PROT_READ, page) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: `consumer` is the live mapping of `page` bytes made above.
                unsafe { libc::munmap(consumer as *mut libc::c_void, page) };
                return Err(err(e));
            }
        };
        Ok(RingBuf {
            fd,
            consumer,
            producer,
            producer_len,
            page,
            mask: size as u64 - 1,
            name: map.name().to_string(),
        })
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: the consumer page starts with the kernel's 8-aligned
        // `consumer_pos`, mapped for the life of self.
        unsafe { AtomicU64::from_ptr(self.consumer as *mut u64) }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: as above for `producer_pos` at the start of the producer
        // page (mapped read-only: we only load from it).
        unsafe { AtomicU64::from_ptr(self.producer as *mut u64) }
    }

    /// Hands up to `max` committed records to `f`, oldest first, and frees
    /// their space in the ring.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&[u8])) -> Drained {
        let mut out = Drained::default();
        let mut cons = self.consumer_pos().load(Ordering::Acquire);
        let prod = self.producer_pos().load(Ordering::Acquire);
        while cons < prod && out.read < max {
            let off = (cons & self.mask) as usize;
            // SAFETY: the data area starts one page into the producer mapping
            // and is mapped twice, so `off + HDR + len` (len < ring size)
            // stays inside it; the header is 8-aligned (records are).
            let hdr = unsafe { self.producer.add(self.page + off) };
            // SAFETY: hdr points at the record's u32 length word, which the
            // kernel publishes with a release store.
            let len_word =
                unsafe { (*(hdr as *const std::sync::atomic::AtomicU32)).load(Ordering::Acquire) };
            if len_word & BUSY != 0 {
                break; // not committed yet: later records must wait too
            }
            let len = (len_word & !(BUSY | DISCARD)) as usize;
            if len_word & DISCARD != 0 {
                out.discarded += 1;
            } else {
                // SAFETY: the record's data follows its header, `len` bytes,
                // inside the double-mapped area (see above).
                let data = unsafe { std::slice::from_raw_parts(hdr.add(HDR as usize), len) };
                f(data);
                out.read += 1;
            }
            cons += (len as u64 + HDR).div_ceil(8) * 8;
            self.consumer_pos().store(cons, Ordering::Release);
        }
        out
    }

    /// Waits until a record is ready or `timeout` passes; true if ready.
    pub fn wait(&self, timeout: Duration) -> Result<bool, BpfError> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: pfd is one live pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return Err(BpfError::sys(
                "poll",
                format!("ring buffer {}", self.name),
                e.raw_os_error().unwrap_or(libc::EIO),
            ));
        }
        Ok(n > 0)
    }
}

impl Drop for RingBuf {
    fn drop(&mut self) {
        // SAFETY: both are live mappings of exactly these lengths, made in
        // `new` and unmapped only here.
        unsafe {
            libc::munmap(self.consumer as *mut libc::c_void, self.page);
            libc::munmap(self.producer as *mut libc::c_void, self.producer_len);
        }
    }
}
