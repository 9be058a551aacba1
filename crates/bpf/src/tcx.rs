//! Attaching tc programs with tcx (Linux >= 6.6).
//!
//! tcx hooks programs to a device's ingress/egress with BPF_PROG_ATTACH
//! instead of a netlink `cls_bpf` filter, so no `clsact` qdisc is needed and
//! the reference `bandwidth` plugin's `ingress` qdisc can coexist. A
//! prog-attached (not link-based) program stays attached until detached or
//! the device is deleted, so an agent restart finds its previous instance on
//! the hook; [`tcx_attach`] replaces such instances by name.
//!
//! All ifindexes are resolved in the calling thread's network namespace.

use std::os::fd::AsFd;

use crate::sys::{self, Attr};
use crate::{BpfError, Program};

/// Which tcx hook of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcxDirection {
    Ingress,
    Egress,
}

impl TcxDirection {
    /// `enum bpf_attach_type`: BPF_TCX_INGRESS = 46, BPF_TCX_EGRESS = 47.
    fn attach_type(self) -> u32 {
        match self {
            TcxDirection::Ingress => 46,
            TcxDirection::Egress => 47,
        }
    }

    fn hook(self, ifindex: u32) -> String {
        let dir = match self {
            TcxDirection::Ingress => "ingress",
            TcxDirection::Egress => "egress",
        };
        format!("tcx {dir} of ifindex {ifindex}")
    }
}

/// An entry of a hook: program id, and the id of the link holding it (0 for
/// programs attached with BPF_PROG_ATTACH).
struct Entry {
    prog_id: u32,
    link_id: u32,
}

/// BPF_PROG_QUERY: the hook's programs in run order.
fn query(ifindex: u32, dir: TcxDirection) -> Result<Vec<Entry>, BpfError> {
    let mut cap = 16usize;
    loop {
        let mut progs = vec![0u32; cap];
        let mut links = vec![0u32; cap];
        let mut attr = Attr::new();
        // query.target_ifindex @0, attach_type @4, query_flags @8 (0),
        // prog_ids @16, prog_cnt @24 (in: capacity, out: total), link_ids @40
        attr.u32(0, ifindex)
            .u32(4, dir.attach_type())
            .ptr(16, progs.as_mut_ptr())
            .u32(24, cap as u32)
            .ptr(40, links.as_mut_ptr());
        // the id arrays hold `cap` entries, as prog_cnt tells the kernel
        // SAFETY: every pointer in `attr` borrows a buffer (a local or an argument)
        // that outlives the call and has the size the attr states.
        match unsafe { sys::bpf(sys::BPF_PROG_QUERY, &mut attr) } {
            Ok(_) => {
                let n = (attr.get_u32(24) as usize).min(cap);
                return Ok((0..n)
                    .map(|i| Entry {
                        prog_id: progs[i],
                        link_id: links[i],
                    })
                    .collect());
            }
            // more entries than room: prog_cnt now holds the total
            Err(libc::ENOSPC) if cap < 4096 => cap = (attr.get_u32(24) as usize).max(cap * 2),
            Err(e) => return Err(BpfError::sys("BPF_PROG_QUERY", dir.hook(ifindex), e)),
        }
    }
}

/// The hook's programs in run order: `(id, kernel name)` (names are cut to
/// 15 bytes by the kernel). Programs that vanish while listing are skipped.
pub fn tcx_programs(ifindex: u32, dir: TcxDirection) -> Result<Vec<(u32, String)>, BpfError> {
    let mut out = Vec::new();
    for e in query(ifindex, dir)? {
        if let Some(name) = prog_name(e.prog_id)? {
            out.push((e.prog_id, name));
        }
    }
    Ok(out)
}

/// The kernel name of program `id`; `None` if it no longer exists.
fn prog_name(id: u32) -> Result<Option<String>, BpfError> {
    let fd = match sys::prog_fd_by_id(id) {
        Ok(fd) => fd,
        Err(libc::ENOENT) => return Ok(None),
        Err(e) => {
            return Err(BpfError::sys(
                "BPF_PROG_GET_FD_BY_ID",
                format!("program id {id}"),
                e,
            ))
        }
    };
    let (_, name) = sys::prog_info(fd.as_fd()).map_err(sys::map_err(
        "BPF_OBJ_GET_INFO_BY_FD",
        format!("program id {id}"),
    ))?;
    Ok(Some(name))
}

/// Attaches `prog` at the end of the hook, then detaches every other program
/// with the same name (an instance left by a previous agent run). Attaching
/// before detaching means the hook is never without the program. Idempotent:
/// when `prog` itself is already attached, nothing is attached again.
pub fn tcx_attach(ifindex: u32, dir: TcxDirection, prog: &Program) -> Result<(), BpfError> {
    let attached = query(ifindex, dir)?.iter().any(|e| e.prog_id == prog.id());
    if !attached {
        let mut attr = Attr::new();
        // target_ifindex @0, attach_bpf_fd @4, attach_type @8; attach_flags,
        // relative_fd and expected_revision 0: append, whatever the revision
        attr.u32(0, ifindex)
            .fd(4, prog.as_fd())
            .u32(8, dir.attach_type());
        // SAFETY: every pointer in `attr` borrows a buffer (a local or an argument)
        // that outlives the call and has the size the attr states.
        match unsafe { sys::bpf(sys::BPF_PROG_ATTACH, &mut attr) } {
            // EEXIST: a concurrent caller attached this very program
            Ok(_) | Err(libc::EEXIST) => {}
            Err(e) => {
                let object = format!("{} on {}", prog.name(), dir.hook(ifindex));
                return Err(BpfError::sys("BPF_PROG_ATTACH", object, e));
            }
        }
    }
    detach(ifindex, dir, prog.name(), Some(prog.id()))?;
    Ok(())
}

/// Detaches every program named `name` from the hook; returns how many.
/// Programs held by a bpf_link (another tool's) are left alone.
pub fn tcx_detach_named(ifindex: u32, dir: TcxDirection, name: &str) -> Result<usize, BpfError> {
    detach(ifindex, dir, name, None)
}

fn detach(
    ifindex: u32,
    dir: TcxDirection,
    name: &str,
    keep: Option<u32>,
) -> Result<usize, BpfError> {
    // the kernel keeps the first 15 bytes of a program's name
    let want = &name.as_bytes()[..name.len().min(15)];
    let mut n = 0;
    for e in query(ifindex, dir)? {
        if e.link_id != 0 || Some(e.prog_id) == keep {
            continue;
        }
        let fd = match sys::prog_fd_by_id(e.prog_id) {
            Ok(fd) => fd,
            Err(libc::ENOENT) => continue,
            Err(err) => {
                return Err(BpfError::sys(
                    "BPF_PROG_GET_FD_BY_ID",
                    format!("program id {}", e.prog_id),
                    err,
                ))
            }
        };
        let (_, kname) = sys::prog_info(fd.as_fd()).map_err(sys::map_err(
            "BPF_OBJ_GET_INFO_BY_FD",
            format!("program id {}", e.prog_id),
        ))?;
        if kname.as_bytes() != want {
            continue;
        }
        let mut attr = Attr::new();
        // target_ifindex @0, attach_bpf_fd @4, attach_type @8
        attr.u32(0, ifindex)
            .fd(4, fd.as_fd())
            .u32(8, dir.attach_type());
        // SAFETY: every pointer in `attr` borrows a buffer (a local or an argument)
        // that outlives the call and has the size the attr states.
        match unsafe { sys::bpf(sys::BPF_PROG_DETACH, &mut attr) } {
            Ok(_) => n += 1,
            // detached meanwhile by someone else
            Err(libc::ENOENT) => {}
            Err(err) => {
                let object = format!("{kname} (id {}) from {}", e.prog_id, dir.hook(ifindex));
                return Err(BpfError::sys("BPF_PROG_DETACH", object, err));
            }
        }
    }
    Ok(n)
}
