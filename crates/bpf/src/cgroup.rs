//! Attaching `cgroup_skb` and `cgroup/<sock_addr hook>` programs to a
//! cgroup (v2) directory, with
//! BPF_F_ALLOW_MULTI so weft's programs sit beside anyone else's.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use crate::sys::{self, Attr};
use crate::{BpfError, ProgKind, Program};

/// `BPF_F_ALLOW_MULTI`.
const ALLOW_MULTI: u32 = 2;

fn open_cgroup(dir: &Path) -> Result<File, BpfError> {
    File::open(dir).map_err(|source| BpfError::Io {
        path: dir.into(),
        source,
    })
}

fn cgroup_kind(prog: &Program) -> Result<ProgKind, BpfError> {
    match prog.kind() {
        k @ (ProgKind::CgroupSkbIngress | ProgKind::CgroupSkbEgress | ProgKind::SockAddr(_)) => {
            Ok(k)
        }
        ProgKind::SchedCls => Err(BpfError::Unsupported(format!(
            "program {} is a tc program; attach it with tcx_attach",
            prog.name()
        ))),
    }
}

/// BPF_PROG_ATTACH of `prog` to the cgroup at `dir` (a cgroup2 directory).
pub fn cgroup_attach(dir: &Path, prog: &Program) -> Result<(), BpfError> {
    let kind = cgroup_kind(prog)?;
    let cg = open_cgroup(dir)?;
    let mut attr = Attr::new();
    // target_fd @0, attach_bpf_fd @4, attach_type @8, attach_flags @12
    attr.fd(0, cg.as_fd())
        .fd(4, prog.as_fd())
        .u32(8, kind.attach_type())
        .u32(12, ALLOW_MULTI);
    // SAFETY: the attr holds no pointers, only fds that live across the call.
    unsafe { sys::bpf(sys::BPF_PROG_ATTACH, &mut attr) }.map_err(sys::map_err(
        "BPF_PROG_ATTACH",
        format!("program {} to cgroup {}", prog.name(), dir.display()),
    ))?;
    Ok(())
}

/// BPF_PROG_DETACH of `prog` from the cgroup at `dir`; `false` if it was not
/// attached there.
pub fn cgroup_detach(dir: &Path, prog: &Program) -> Result<bool, BpfError> {
    let kind = cgroup_kind(prog)?;
    let cg = open_cgroup(dir)?;
    let mut attr = Attr::new();
    attr.fd(0, cg.as_fd())
        .fd(4, prog.as_fd())
        .u32(8, kind.attach_type());
    // SAFETY: as in `cgroup_attach`.
    match unsafe { sys::bpf(sys::BPF_PROG_DETACH, &mut attr) } {
        Ok(_) => Ok(true),
        Err(libc::ENOENT) => Ok(false),
        Err(e) => Err(BpfError::sys(
            "BPF_PROG_DETACH",
            format!("program {} from cgroup {}", prog.name(), dir.display()),
            e,
        )),
    }
}

/// The ids of the programs attached to the cgroup at `dir` for `kind`.
pub fn cgroup_programs(dir: &Path, kind: ProgKind) -> Result<Vec<u32>, BpfError> {
    let cg = open_cgroup(dir)?;
    let mut ids = vec![0u32; 64];
    let mut attr = Attr::new();
    // query.target_fd @0, attach_type @4, query_flags @8, attach_flags @12
    // (out), prog_ids @16, prog_cnt @24
    attr.fd(0, cg.as_fd())
        .u32(4, kind.attach_type())
        .ptr(16, ids.as_mut_ptr())
        .u32(24, ids.len() as u32);
    // SAFETY: prog_ids points at `ids`, prog_cnt entries long, which outlives the call.
    unsafe { sys::bpf(sys::BPF_PROG_QUERY, &mut attr) }.map_err(sys::map_err(
        "BPF_PROG_QUERY",
        format!("cgroup {}", dir.display()),
    ))?;
    ids.truncate((attr.get_u32(24) as usize).min(ids.len()));
    Ok(ids)
}

/// Attaches `prog` to the cgroup at `dir` (if it is not there yet), then
/// detaches every other program of its kind and name from it (an instance
/// left by a previous agent run), so the hook is never without the
/// program. Returns how many old instances were detached.
pub fn cgroup_replace(dir: &Path, prog: &Program) -> Result<usize, BpfError> {
    let kind = cgroup_kind(prog)?;
    if !cgroup_programs(dir, kind)?.contains(&prog.id()) {
        cgroup_attach(dir, prog)?;
    }
    detach_named(dir, kind, prog.name(), Some(prog.id()))
}

/// Detaches every program named `name` of `kind` from the cgroup at `dir`;
/// returns how many.
pub fn cgroup_detach_named(dir: &Path, kind: ProgKind, name: &str) -> Result<usize, BpfError> {
    detach_named(dir, kind, name, None)
}

fn detach_named(
    dir: &Path,
    kind: ProgKind,
    name: &str,
    keep: Option<u32>,
) -> Result<usize, BpfError> {
    // the kernel keeps the first 15 bytes of a program's name
    let want = &name.as_bytes()[..name.len().min(15)];
    let cg = open_cgroup(dir)?;
    let mut n = 0;
    for id in cgroup_programs(dir, kind)? {
        if Some(id) == keep {
            continue;
        }
        let fd = match sys::prog_fd_by_id(id) {
            Ok(fd) => fd,
            Err(libc::ENOENT) => continue,
            Err(e) => {
                return Err(BpfError::sys(
                    "BPF_PROG_GET_FD_BY_ID",
                    format!("program id {id}"),
                    e,
                ))
            }
        };
        let (_, kname) = sys::prog_info(fd.as_fd()).map_err(sys::map_err(
            "BPF_OBJ_GET_INFO_BY_FD",
            format!("program id {id}"),
        ))?;
        if kname.as_bytes() != want {
            continue;
        }
        let mut attr = Attr::new();
        attr.fd(0, cg.as_fd())
            .fd(4, fd.as_fd())
            .u32(8, kind.attach_type());
        // SAFETY: as in `cgroup_attach`.
        match unsafe { sys::bpf(sys::BPF_PROG_DETACH, &mut attr) } {
            Ok(_) => n += 1,
            Err(libc::ENOENT) => {}
            Err(e) => {
                return Err(BpfError::sys(
                    "BPF_PROG_DETACH",
                    format!("{kname} (id {id}) from cgroup {}", dir.display()),
                    e,
                ))
            }
        }
    }
    Ok(n)
}
