//! BPF_PROG_TEST_RUN: run a loaded program on a crafted packet, no device
//! or namespace needed. The kernel builds an skb from `data` (for tc
//! programs starting at the Ethernet header), runs the program once (or
//! `repeat` times) and hands back its return value and the packet as the
//! program left it.

use std::os::fd::AsFd;

use crate::sys::{self, Attr};
use crate::{BpfError, Program};

/// The writable fields of `struct __sk_buff` a test may set; the kernel
/// refuses any other non-zero field. Offsets are the UAPI's (checked
/// against `linux/bpf.h` by `skb_ctx_offsets`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkbCtx {
    /// `skb->mark`.
    pub mark: u32,
    /// What `skb->ingress_ifindex` reads (the device the packet came in on).
    pub ingress_ifindex: u32,
    /// The device the skb is on; 0 or 1 means loopback. Must exist.
    pub ifindex: u32,
}

/// `offsetof(struct __sk_buff, mark / ingress_ifindex / ifindex)`.
pub(crate) const SKB_MARK: usize = 8;
pub(crate) const SKB_INGRESS_IFINDEX: usize = 36;
pub(crate) const SKB_IFINDEX: usize = 40;
/// The context passed: up to and including `ifindex`, the rest zero.
const SKB_CTX_LEN: usize = 44;

impl SkbCtx {
    fn bytes(&self) -> [u8; SKB_CTX_LEN] {
        let mut b = [0u8; SKB_CTX_LEN];
        b[SKB_MARK..SKB_MARK + 4].copy_from_slice(&self.mark.to_ne_bytes());
        b[SKB_INGRESS_IFINDEX..SKB_INGRESS_IFINDEX + 4]
            .copy_from_slice(&self.ingress_ifindex.to_ne_bytes());
        b[SKB_IFINDEX..SKB_IFINDEX + 4].copy_from_slice(&self.ifindex.to_ne_bytes());
        b
    }
}

/// What one test run returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (for tc: the verdict, e.g. `TCX_NEXT` -1
    /// or `TC_ACT_REDIRECT` 7).
    pub retval: i32,
    /// The packet after the program (rewrites included).
    pub data: Vec<u8>,
    /// Mean run time in ns over the repeats, as the kernel measured it.
    pub duration_ns: u32,
}

/// Headroom for programs that grow the packet.
const DATA_OUT_SLACK: usize = 256;

impl Program {
    /// Runs the program `repeat` times (at least once) on `data` with the
    /// skb context `ctx`. Needs CAP_BPF (and CAP_NET_ADMIN for tc programs).
    pub fn test_run(&self, data: &[u8], ctx: &SkbCtx, repeat: u32) -> Result<TestRun, BpfError> {
        let ctx_in = ctx.bytes();
        let mut out = vec![0u8; data.len() + DATA_OUT_SLACK];
        let mut attr = Attr::new();
        // test.prog_fd @0, retval @4 (out), data_size_in @8, data_size_out @12
        // (in: capacity, out: length), data_in @16, data_out @24, repeat @32,
        // duration @36 (out), ctx_size_in @40, ctx_in @48
        attr.fd(0, self.as_fd())
            .u32(8, data.len() as u32)
            .u32(12, out.len() as u32)
            .ptr(16, data.as_ptr())
            .ptr(24, out.as_mut_ptr())
            .u32(32, repeat.max(1))
            .u32(40, SKB_CTX_LEN as u32)
            .ptr(48, ctx_in.as_ptr());
        // SAFETY: data_in is `data` (data_size_in bytes, read), data_out is
        // `out` (data_size_out bytes, written at most), ctx_in is `ctx_in`
        // (ctx_size_in bytes, read); all outlive the call.
        unsafe { sys::bpf(sys::BPF_PROG_TEST_RUN, &mut attr) }.map_err(sys::map_err(
            "BPF_PROG_TEST_RUN",
            format!("program {}", self.name()),
        ))?;
        let len = (attr.get_u32(12) as usize).min(out.len());
        out.truncate(len);
        Ok(TestRun {
            retval: attr.get_u32(4) as i32,
            data: out,
            duration_ns: attr.get_u32(36),
        })
    }
}
