//! The bpf(2) syscall and the few commands the loader issues.
//!
//! `union bpf_attr` is built as a zeroed byte buffer with fields written at
//! their offsets (taken from the kernel's BTF, `bpftool btf dump file
//! /sys/kernel/btf/vmlinux format c`). The kernel accepts any attr size: it
//! copies what it knows and requires bytes beyond its own union to be zero, so
//! a buffer covering the fields we use works on every kernel; unset fields
//! being zero is exactly the default the kernel expects.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::BpfError;

/// Covers every field used here (the last is `log_true_size` at 140 of
/// BPF_PROG_LOAD). The 6.18 union is 168 bytes; older kernels' are smaller.
const ATTR_SIZE: usize = 144;

// enum bpf_cmd
pub const BPF_MAP_CREATE: u32 = 0;
pub const BPF_MAP_LOOKUP_ELEM: u32 = 1;
pub const BPF_MAP_UPDATE_ELEM: u32 = 2;
pub const BPF_MAP_DELETE_ELEM: u32 = 3;
pub const BPF_MAP_GET_NEXT_KEY: u32 = 4;
pub const BPF_PROG_LOAD: u32 = 5;
pub const BPF_OBJ_PIN: u32 = 6;
pub const BPF_OBJ_GET: u32 = 7;
pub const BPF_PROG_ATTACH: u32 = 8;
pub const BPF_PROG_DETACH: u32 = 9;
pub const BPF_PROG_TEST_RUN: u32 = 10;
pub const BPF_PROG_GET_FD_BY_ID: u32 = 13;
pub const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
pub const BPF_PROG_QUERY: u32 = 16;
pub const BPF_MAP_UPDATE_BATCH: u32 = 26;
pub const BPF_MAP_DELETE_BATCH: u32 = 27;

/// `union bpf_attr`, zeroed, 8-aligned (it holds `__u64` fields).
#[repr(C, align(8))]
pub struct Attr([u8; ATTR_SIZE]);

impl Attr {
    pub fn new() -> Attr {
        Attr([0; ATTR_SIZE])
    }
    pub fn u32(&mut self, off: usize, v: u32) -> &mut Attr {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    pub fn u64(&mut self, off: usize, v: u64) -> &mut Attr {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    /// A user pointer field (`__aligned_u64`).
    pub fn ptr<T>(&mut self, off: usize, p: *const T) -> &mut Attr {
        self.u64(off, p as usize as u64)
    }
    pub fn fd(&mut self, off: usize, fd: BorrowedFd<'_>) -> &mut Attr {
        self.u32(off, fd.as_raw_fd() as u32)
    }
    pub fn bytes(&mut self, off: usize, b: &[u8]) -> &mut Attr {
        self.0[off..off + b.len()].copy_from_slice(b);
        self
    }
    pub fn get_u32(&self, off: usize) -> u32 {
        u32::from_ne_bytes(self.0[off..off + 4].try_into().expect("4 bytes"))
    }
}

/// Issues `cmd`; returns the syscall's result or the positive errno.
///
/// # Safety
/// Every pointer written into `attr` must point to memory that is valid for
/// the access `cmd` makes (reads of keys and instructions, writes of values
/// and ids) and lives across this call.
pub unsafe fn bpf(cmd: u32, attr: &mut Attr) -> Result<i64, i32> {
    // SAFETY: `attr` is a valid, writable buffer of ATTR_SIZE bytes for the
    // duration of the call (the kernel may write results into it); pointers
    // inside it are the caller's responsibility, see above.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr.0.as_mut_ptr(),
            ATTR_SIZE,
        )
    };
    if ret < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(ret)
    }
}

/// [`bpf`] for the commands that return a new file descriptor.
///
/// # Safety
/// As for [`bpf`].
pub unsafe fn bpf_fd(cmd: u32, attr: &mut Attr) -> Result<OwnedFd, i32> {
    // SAFETY: the caller upholds `bpf`'s contract
    let fd = unsafe { bpf(cmd, attr) }?;
    // SAFETY: on success these commands return a new fd that nothing else
    // owns (the kernel opens it O_CLOEXEC).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The leading part of `struct bpf_prog_info`: `id` at 4, `name[16]` at 64.
/// Asking for only 80 bytes works with every kernel that has both fields.
const PROG_INFO_LEN: usize = 80;

/// A program's id and (kernel, at most 15 bytes) name.
pub fn prog_info(fd: BorrowedFd<'_>) -> Result<(u32, String), i32> {
    #[repr(C, align(8))]
    struct Info([u8; PROG_INFO_LEN]);
    let mut info = Info([0; PROG_INFO_LEN]);
    let mut attr = Attr::new();
    // info.bpf_fd @0, info.info_len @4, info.info @8
    attr.fd(0, fd)
        .u32(4, PROG_INFO_LEN as u32)
        .ptr(8, info.0.as_mut_ptr());
    // SAFETY: every pointer in `attr` borrows a buffer (a local or an argument)
    // that outlives the call and has the size the attr states.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    let id = u32::from_ne_bytes(info.0[4..8].try_into().expect("4 bytes"));
    let name = &info.0[64..80];
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok((id, String::from_utf8_lossy(&name[..len]).into_owned()))
}

/// The leading part of `struct bpf_map_info`: type @0, id @4, key_size @8,
/// value_size @12, max_entries @16, map_flags @20.
const MAP_INFO_LEN: usize = 24;

/// A map's (type, key size, value size, max entries, flags).
pub fn map_info(fd: BorrowedFd<'_>) -> Result<(u32, u32, u32, u32, u32), i32> {
    #[repr(C, align(8))]
    struct Info([u8; MAP_INFO_LEN]);
    let mut info = Info([0; MAP_INFO_LEN]);
    let mut attr = Attr::new();
    attr.fd(0, fd)
        .u32(4, MAP_INFO_LEN as u32)
        .ptr(8, info.0.as_mut_ptr());
    // SAFETY: every pointer in `attr` borrows a buffer (a local or an argument)
    // that outlives the call and has the size the attr states.
    unsafe { bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    let f = |i: usize| u32::from_ne_bytes(info.0[i..i + 4].try_into().expect("4 bytes"));
    Ok((f(0), f(8), f(12), f(16), f(20)))
}

/// An fd for the program with `id` (ENOENT once it is gone).
pub fn prog_fd_by_id(id: u32) -> Result<OwnedFd, i32> {
    let mut attr = Attr::new();
    attr.u32(0, id); // prog_id
                     // SAFETY: every pointer in `attr` borrows a buffer (a local or an argument)
                     // that outlives the call and has the size the attr states.
    unsafe { bpf_fd(BPF_PROG_GET_FD_BY_ID, &mut attr) }
}

/// The name the kernel stores for an object: at most 15 bytes of `name`
/// (BPF_OBJ_NAME_LEN is 16 with the NUL). Empty when `name` has characters
/// the kernel rejects (it allows `[A-Za-z0-9_.]`), as the name is cosmetic.
pub fn obj_name(name: &str) -> &[u8] {
    let b = &name.as_bytes()[..name.len().min(15)];
    if b.iter()
        .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'.')
    {
        b
    } else {
        &[]
    }
}

pub fn map_err(op: &'static str, object: impl Into<String>) -> impl FnOnce(i32) -> BpfError {
    move |errno| BpfError::sys(op, object, errno)
}
