//! weft's own, small eBPF loader: tc, cgroup_skb and cgroup sock_addr programs with kfunc
//! calls, legacy maps (pinned under bpffs when asked), attached with tcx or
//! to a cgroup, testable with BPF_PROG_TEST_RUN, ring buffers read with
//! bounded memory.
//!
//! Why not aya or libbpf-rs: weft's programs call the conntrack kfuncs
//! (`bpf_skb_ct_lookup`, `bpf_ct_release`), which aya on crates.io cannot
//! relocate, and libbpf would add a C dependency for the little we need.
//!
//! The object conventions (what `clang -O2 -g -target bpf -c` produces from
//! weft's C): one program per `tc/<name>` section, helpers inlined; maps as
//! `struct weft_map_def` symbols in a `maps` section; a `license` string;
//! kfuncs as `extern ... __ksym` functions. Program BTF (.BTF, .BTF.ext) is
//! not passed to the kernel: kfunc calls are checked against the kernel's
//! own BTF, which is all the verifier needs here.
//!
//! - [`parse_object`]: ELF to [`ParsedObject`], pure.
//! - [`load`] / [`load_with`]: creates (or re-uses pinned) maps, relocates,
//!   BPF_PROG_LOADs every program.
//! - [`tcx_attach`] / [`tcx_detach_named`] / [`tcx_programs`]: the tc hooks;
//!   [`cgroup_attach`] / [`cgroup_detach`]: cgroup hooks.
//! - [`pin`]: maps that outlive the agent; [`PrivateBpffs`] for tests.
//! - [`Program::test_run`]: BPF_PROG_TEST_RUN on a crafted packet.
//! - [`RingBuf`]: reads a ring buffer map; [`TypedMap`], [`PerCpuArray`],
//!   [`ProgArray`]: typed views over [`Pod`] keys and values.

mod btf;
mod cgroup;
mod elf;
mod error;
mod maps;
mod object;
pub mod pin;
mod ringbuf;
mod sys;
mod tcx;
mod testrun;
#[cfg(test)]
mod tests;
mod typed;

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

pub use btf::{btf_func_id, VMLINUX_BTF};
pub use cgroup::{
    cgroup_attach, cgroup_detach, cgroup_detach_named, cgroup_programs, cgroup_replace,
};
pub use error::BpfError;
pub use maps::{possible_cpus, BatchFailed, Map};
pub use object::{
    parse_object, MapDef, ParsedObject, ProgKind, ProgramSpec, Reloc, RelocKind, SockAddrHook,
    PIN_BY_NAME, PIN_NONE,
};
pub use pin::{PinOutcome, PrivateBpffs};
pub use ringbuf::{Drained, RingBuf, MAP_TYPE_RINGBUF};
pub use tcx::{tcx_attach, tcx_detach_named, tcx_programs, TcxDirection};
pub use testrun::{SkbCtx, TestRun};
pub use typed::{
    bytes_of, from_bytes, LpmTrie, PerCpuArray, Pod, ProgArray, TypedMap, MAP_TYPE_PROG_ARRAY,
};

use sys::Attr;

/// Verifier log for the retry of a failed load.
const LOG_SIZE: usize = 1 << 20;
/// How much of the verifier log goes into the error.
const LOG_LINES: usize = 40;

/// A loaded program; unloaded when dropped unless something (a tcx hook)
/// still holds it.
#[derive(Debug)]
pub struct Program {
    fd: OwnedFd,
    name: String,
    id: u32,
    kind: ProgKind,
}

impl Program {
    /// The function's name in the object (the kernel keeps the first 15 bytes).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kernel's id for this program (as `bpftool prog` shows it).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// What it was loaded as (from its section).
    pub fn kind(&self) -> ProgKind {
        self.kind
    }
}

impl AsFd for Program {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The maps and programs of one loaded object.
#[derive(Debug)]
pub struct Loaded {
    maps: Vec<Map>,
    programs: Vec<Program>,
}

impl Loaded {
    pub fn map(&self, name: &str) -> Result<&Map, BpfError> {
        self.maps
            .iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| BpfError::NotFound {
                kind: "map",
                name: name.to_string(),
            })
    }

    pub fn program(&self, name: &str) -> Result<&Program, BpfError> {
        self.programs
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| BpfError::NotFound {
                kind: "program",
                name: name.to_string(),
            })
    }

    pub fn maps(&self) -> &[Map] {
        &self.maps
    }

    pub fn programs(&self) -> &[Program] {
        &self.programs
    }
}

/// How [`load_with`] treats the object's maps.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions<'a> {
    /// Where maps defined with `pinning = PIN_BY_NAME` live (a directory on
    /// bpffs, one per agent instance). `None`: every map is fresh.
    pub pin_dir: Option<&'a Path>,
    /// An object loaded before whose maps this one shares by name (one
    /// entry file per attach point, one set of maps): a map of the same
    /// name must have the same layout, and is used instead of a new one.
    pub share: Option<&'a Loaded>,
}

/// [`load_with`] without pinning: every map fresh.
pub fn load(elf: &[u8]) -> Result<Loaded, BpfError> {
    load_with(elf, &LoadOptions::default())
}

/// Parses `elf`, resolves its kfuncs against the running kernel's BTF,
/// creates its maps (pinned ones re-used from `opts.pin_dir` when their
/// layout matches, see [`pin`]) and loads every program as the type its
/// section names.
pub fn load_with(elf: &[u8], opts: &LoadOptions<'_>) -> Result<Loaded, BpfError> {
    let obj = parse_object(elf)?;
    // resolve kfuncs first: a missing one fails before any kernel object exists
    let kfuncs = resolve_kfuncs(&obj)?;
    let maps = obj
        .map_defs()
        .map(|(name, def)| {
            if let Some(m) = opts.share.and_then(|l| l.map(name).ok()) {
                return m.shared(def);
            }
            match (def.pinning, opts.pin_dir) {
                (PIN_BY_NAME, Some(dir)) => Map::pinned(dir, name, *def),
                _ => Map::create(name, *def),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let license = CString::new(obj.license())
        .map_err(|_| BpfError::Elf("license contains a NUL byte".into()))?;
    let mut programs = Vec::new();
    for spec in obj.programs() {
        let mut insns = spec.insns.clone();
        for r in &spec.relocs {
            let insn = &mut insns[r.insn];
            match &r.kind {
                RelocKind::Map(name) => {
                    let map = maps
                        .iter()
                        .find(|m| m.name() == name)
                        .expect("parsed map exists");
                    object::patch_map_fd(insn, map.as_fd().as_raw_fd());
                }
                RelocKind::Kfunc(name) => object::patch_kfunc(insn, kfuncs[name.as_str()]),
            }
        }
        programs.push(load_program(&spec.name, spec.kind, &insns, &license)?);
    }
    Ok(Loaded { maps, programs })
}

/// The vmlinux BTF id of every kfunc the object calls.
fn resolve_kfuncs(obj: &ParsedObject) -> Result<HashMap<&str, u32>, BpfError> {
    let mut ids = HashMap::new();
    let mut vmlinux = None;
    for r in obj.programs().iter().flat_map(|p| &p.relocs) {
        let RelocKind::Kfunc(name) = &r.kind else {
            continue;
        };
        if ids.contains_key(name.as_str()) {
            continue;
        }
        let btf = match &vmlinux {
            Some(b) => b,
            None => vmlinux.insert(std::fs::read(VMLINUX_BTF).map_err(|source| BpfError::Io {
                path: VMLINUX_BTF.into(),
                source,
            })?),
        };
        ids.insert(name.as_str(), btf_func_id(btf, name)?);
    }
    Ok(ids)
}

/// BPF_PROG_LOAD, and on failure once more with a verifier log.
fn load_program(
    name: &str,
    kind: ProgKind,
    insns: &[[u8; 8]],
    license: &CString,
) -> Result<Program, BpfError> {
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut attr = Attr::new();
        // prog_type @0, insn_cnt @4, insns @8, license @16, prog_name @48,
        // expected_attach_type @68; kern_version @40, prog_flags @44 stay 0
        attr.u32(0, kind.prog_type())
            .u32(68, kind.attach_type())
            .u32(4, insns.len() as u32)
            .ptr(8, insns.as_ptr())
            .ptr(16, license.as_ptr())
            .bytes(48, sys::obj_name(name));
        if let Some(log) = log {
            // log_level @24 (1: the verifier's trace), log_size @28, log_buf @32
            attr.u32(24, 1)
                .u32(28, log.len() as u32)
                .ptr(32, log.as_mut_ptr());
        }
        // the kernel reads insn_cnt instructions and the NUL-terminated
        // license, and writes at most log_size bytes of log: all valid here.
        // EAGAIN: the verifier was interrupted; libbpf retries too.
        // SAFETY: every pointer in `attr` borrows a buffer (a local or an argument)
        // that outlives the call and has the size the attr states.
        let mut r = unsafe { sys::bpf_fd(sys::BPF_PROG_LOAD, &mut attr) };
        for _ in 0..4 {
            if !matches!(r, Err(libc::EAGAIN)) {
                break;
            }
            // SAFETY: every pointer in `attr` borrows a buffer (a local or an argument)
            // that outlives the call and has the size the attr states.
            r = unsafe { sys::bpf_fd(sys::BPF_PROG_LOAD, &mut attr) };
        }
        r
    };
    let fd = match attempt(None) {
        Ok(fd) => fd,
        Err(_) => {
            let mut log = vec![0u8; LOG_SIZE];
            match attempt(Some(&mut log)) {
                Ok(fd) => fd,
                // no log: refused before verification (privileges, bad attr)
                Err(errno) if log[0] == 0 => {
                    return Err(BpfError::sys(
                        "BPF_PROG_LOAD",
                        format!("program {name}"),
                        errno,
                    ))
                }
                Err(errno) => {
                    return Err(BpfError::Verifier {
                        program: name.to_string(),
                        errno,
                        log: log_tail(&log),
                    })
                }
            }
        }
    };
    let (id, _) = sys::prog_info(fd.as_fd()).map_err(sys::map_err(
        "BPF_OBJ_GET_INFO_BY_FD",
        format!("program {name}"),
    ))?;
    Ok(Program {
        fd,
        name: name.to_string(),
        id,
        kind,
    })
}

/// The last [`LOG_LINES`] lines of a NUL-terminated log buffer.
fn log_tail(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let text = String::from_utf8_lossy(&buf[..end]);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(LOG_LINES)..].join("\n")
}
