//! From ELF to what the kernel needs: the programs of the `tc/<name>`,
//! `cgroup_skb/<ingress|egress>` and `cgroup/<sock_addr hook>` sections with their relocations, the legacy map definitions of the `maps`
//! section and the license. Pure: no syscalls.
//!
//! Only the conventions weft's C side uses are accepted; anything else (global
//! variables, BPF-to-BPF calls, other program types) is rejected with a
//! message that says how to write it instead, rather than loaded wrongly.

use crate::elf::{self, Elf, Section, Symbol};
use crate::BpfError;

/// Prefixes of program sections and what they load as.
const PROG_PREFIXES: &[(&str, ProgKind)] = &[
    ("tc/", ProgKind::SchedCls),
    ("cgroup_skb/ingress", ProgKind::CgroupSkbIngress),
    ("cgroup_skb/egress", ProgKind::CgroupSkbEgress),
    (
        "cgroup/connect4",
        ProgKind::SockAddr(SockAddrHook::Connect4),
    ),
    (
        "cgroup/connect6",
        ProgKind::SockAddr(SockAddrHook::Connect6),
    ),
    (
        "cgroup/sendmsg4",
        ProgKind::SockAddr(SockAddrHook::Sendmsg4),
    ),
    (
        "cgroup/sendmsg6",
        ProgKind::SockAddr(SockAddrHook::Sendmsg6),
    ),
    (
        "cgroup/recvmsg4",
        ProgKind::SockAddr(SockAddrHook::Recvmsg4),
    ),
    (
        "cgroup/recvmsg6",
        ProgKind::SockAddr(SockAddrHook::Recvmsg6),
    ),
    (
        "cgroup/getpeername4",
        ProgKind::SockAddr(SockAddrHook::Getpeername4),
    ),
    (
        "cgroup/getpeername6",
        ProgKind::SockAddr(SockAddrHook::Getpeername6),
    ),
];
const MAPS_SECTION: &str = "maps";
const LICENSE_SECTION: &str = "license";
/// `sizeof(struct weft_map_def)`: 20 bytes, or 24 with the `pinning` field.
const MAP_DEF_SIZES: [u64; 2] = [20, 24];
/// `R_BPF_64_64`: the 64-bit immediate of an `ld_imm64`.
const R_BPF_64_64: u32 = 1;
/// `R_BPF_64_32`: the 32-bit immediate of a `call`.
const R_BPF_64_32: u32 = 10;
/// Opcodes the relocations may apply to.
const OP_LD_IMM64: u8 = 0x18;
const OP_CALL: u8 = 0x85;
/// `src_reg` values telling the verifier what an immediate means.
const BPF_PSEUDO_MAP_FD: u8 = 1;
const BPF_PSEUDO_KFUNC_CALL: u8 = 2;

/// `struct weft_map_def` of the C side (legacy `maps` section layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapDef {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    /// [`PIN_NONE`] or [`PIN_BY_NAME`]: whether the map lives in the pin
    /// directory and outlives the loader (see [`crate::pin`]).
    pub pinning: u32,
}

/// `pinning` of a map loaded fresh each time.
pub const PIN_NONE: u32 = 0;
/// `pinning` of a map kept under `<pin dir>/<name>` across loads while its
/// layout stays the same (libbpf's `LIBBPF_PIN_BY_NAME`).
pub const PIN_BY_NAME: u32 = 1;

/// The program type a section loads as, and where it may attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProgKind {
    /// `tc/<name>`: BPF_PROG_TYPE_SCHED_CLS, attached with tcx.
    SchedCls,
    /// `cgroup_skb/ingress`: BPF_PROG_TYPE_CGROUP_SKB, BPF_CGROUP_INET_INGRESS.
    CgroupSkbIngress,
    /// `cgroup_skb/egress`: BPF_PROG_TYPE_CGROUP_SKB, BPF_CGROUP_INET_EGRESS.
    CgroupSkbEgress,
    /// `cgroup/<hook>`: BPF_PROG_TYPE_CGROUP_SOCK_ADDR, loaded with the
    /// hook as `expected_attach_type` (the kernel checks it at attach).
    SockAddr(SockAddrHook),
}

/// The socket-address hooks of a cgroup (`enum bpf_attach_type` values):
/// where a socket-level load balancer rewrites the address a program gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SockAddrHook {
    /// `connect(2)` on an IPv4 socket: BPF_CGROUP_INET4_CONNECT.
    Connect4,
    Connect6,
    /// `sendmsg(2)` on an unconnected UDP socket: BPF_CGROUP_UDP4_SENDMSG.
    Sendmsg4,
    Sendmsg6,
    /// `recvmsg(2)` on a UDP socket (the source shown): BPF_CGROUP_UDP4_RECVMSG.
    Recvmsg4,
    Recvmsg6,
    /// `getpeername(2)`: BPF_CGROUP_INET4_GETPEERNAME.
    Getpeername4,
    Getpeername6,
}

impl SockAddrHook {
    pub const ALL: [SockAddrHook; 8] = [
        SockAddrHook::Connect4,
        SockAddrHook::Connect6,
        SockAddrHook::Sendmsg4,
        SockAddrHook::Sendmsg6,
        SockAddrHook::Recvmsg4,
        SockAddrHook::Recvmsg6,
        SockAddrHook::Getpeername4,
        SockAddrHook::Getpeername6,
    ];

    /// `enum bpf_attach_type`.
    pub fn attach_type(self) -> u32 {
        match self {
            SockAddrHook::Connect4 => 10,
            SockAddrHook::Connect6 => 11,
            SockAddrHook::Sendmsg4 => 14,
            SockAddrHook::Sendmsg6 => 15,
            SockAddrHook::Recvmsg4 => 19,
            SockAddrHook::Recvmsg6 => 20,
            SockAddrHook::Getpeername4 => 29,
            SockAddrHook::Getpeername6 => 30,
        }
    }
}

impl ProgKind {
    /// `enum bpf_prog_type`.
    pub fn prog_type(self) -> u32 {
        match self {
            ProgKind::SchedCls => 3,
            ProgKind::CgroupSkbIngress | ProgKind::CgroupSkbEgress => 8,
            ProgKind::SockAddr(_) => 18,
        }
    }

    /// `enum bpf_attach_type` given at load (`expected_attach_type`) and attach.
    pub fn attach_type(self) -> u32 {
        match self {
            ProgKind::SchedCls => 0,
            ProgKind::CgroupSkbIngress => 0,
            ProgKind::CgroupSkbEgress => 1,
            ProgKind::SockAddr(h) => h.attach_type(),
        }
    }
}

/// What a relocated instruction refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelocKind {
    /// An `ld_imm64` that must hold the fd of the named map.
    Map(String),
    /// A `call` of the named kernel function (an `extern ... __ksym`).
    Kfunc(String),
}

/// One relocation: instruction index (in 8-byte units) and target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloc {
    pub insn: usize,
    pub kind: RelocKind,
}

/// One program of the object, before relocation.
#[derive(Debug, Clone)]
pub struct ProgramSpec {
    /// The function symbol, e.g. `weft_from_pod`.
    pub name: String,
    /// The ELF section, e.g. `tc/from_pod`.
    pub section: String,
    pub kind: ProgKind,
    /// The raw instructions, 8 bytes each.
    pub insns: Vec<[u8; 8]>,
    pub relocs: Vec<Reloc>,
}

/// A parsed object file: programs, map definitions and license.
#[derive(Debug, Clone)]
pub struct ParsedObject {
    programs: Vec<ProgramSpec>,
    /// In section order.
    maps: Vec<(String, MapDef)>,
    license: String,
}

impl ParsedObject {
    pub fn map_defs(&self) -> impl Iterator<Item = (&str, &MapDef)> {
        self.maps.iter().map(|(n, d)| (n.as_str(), d))
    }

    pub fn program_names(&self) -> impl Iterator<Item = &str> {
        self.programs.iter().map(|p| p.name.as_str())
    }

    pub fn programs(&self) -> &[ProgramSpec] {
        &self.programs
    }

    pub fn license(&self) -> &str {
        &self.license
    }
}

fn unsupported(msg: impl Into<String>) -> BpfError {
    BpfError::Unsupported(msg.into())
}

/// Parses a BPF object file as `clang -O2 -g -target bpf -c` writes it.
pub fn parse_object(data: &[u8]) -> Result<ParsedObject, BpfError> {
    let elf = Elf::parse(data)?;
    let maps_idx = elf.sections.iter().position(|s| s.name == MAPS_SECTION);
    // (offset in the maps section, name, definition)
    let maps = match maps_idx {
        Some(idx) => map_defs(&elf, idx)?,
        None => Vec::new(),
    };
    let license = elf
        .sections
        .iter()
        .find(|s| s.name == LICENSE_SECTION)
        .and_then(|s| elf::cstr_at(s.data, 0))
        .filter(|l| !l.is_empty())
        .ok_or_else(|| {
            unsupported(
                "no license section (kfuncs need `char _license[] SEC(\"license\") = \"GPL\";`)",
            )
        })?
        .to_string();

    let mut programs = Vec::new();
    for (idx, sec) in elf.sections.iter().enumerate() {
        let is_code = sec.flags & elf::SHF_EXECINSTR != 0 && !sec.data.is_empty();
        if let Some(&(_, kind)) = PROG_PREFIXES.iter().find(|(p, _)| sec.name.starts_with(p)) {
            programs.push(program(&elf, idx, sec, kind, maps_idx, &maps)?);
        } else if sec.name == ".text" && is_code {
            return Err(unsupported(
                "code in .text: BPF-to-BPF calls are not supported; mark helpers static __always_inline",
            ));
        } else if is_code {
            return Err(unsupported(format!(
                "program section {}: weft loads only tc/<name>, cgroup_skb/<ingress|egress> and \
                 cgroup/<connect4|connect6|sendmsg4|sendmsg6|recvmsg4|recvmsg6|getpeername4|getpeername6> sections",
                sec.name
            )));
        }
    }
    if programs.is_empty() {
        return Err(unsupported(
            "no program sections (tc/<name>, cgroup_skb/..., cgroup/...)",
        ));
    }
    let maps = maps.into_iter().map(|(_, name, def)| (name, def)).collect();
    Ok(ParsedObject {
        programs,
        maps,
        license,
    })
}

/// The map definitions: one symbol of 20 or 24 bytes per map in the `maps` section.
fn map_defs(elf: &Elf<'_>, idx: usize) -> Result<Vec<(u64, String, MapDef)>, BpfError> {
    let data = elf.sections[idx].data;
    let mut syms: Vec<&Symbol<'_>> = elf
        .symbols
        .iter()
        .filter(|s| usize::from(s.shndx) == idx && s.kind != elf::STT_SECTION && !s.name.is_empty())
        .collect();
    syms.sort_by_key(|s| s.value);
    let mut maps = Vec::with_capacity(syms.len());
    for s in syms {
        if !MAP_DEF_SIZES.contains(&s.size) {
            return Err(unsupported(format!(
                "map {}: definition is {} bytes, expected 20 or 24 (struct weft_map_def)",
                s.name, s.size
            )));
        }
        let bytes = usize::try_from(s.value)
            .ok()
            .and_then(|off| data.get(off..off.checked_add(s.size as usize)?))
            .ok_or_else(|| {
                BpfError::Elf(format!("map {} lies outside the maps section", s.name))
            })?;
        let f = |i: usize| u32::from_le_bytes(bytes[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        let def = MapDef {
            map_type: f(0),
            key_size: f(1),
            value_size: f(2),
            max_entries: f(3),
            flags: f(4),
            pinning: if s.size == 24 { f(5) } else { PIN_NONE },
        };
        maps.push((s.value, s.name.to_string(), def));
    }
    Ok(maps)
}

/// One program section: its function symbol, instructions and relocations.
fn program(
    elf: &Elf<'_>,
    idx: usize,
    sec: &Section<'_>,
    kind: ProgKind,
    maps_idx: Option<usize>,
    maps: &[(u64, String, MapDef)],
) -> Result<ProgramSpec, BpfError> {
    if sec.data.is_empty() || !sec.data.len().is_multiple_of(8) {
        return Err(BpfError::Elf(format!(
            "{}: empty, or its size is not a multiple of 8",
            sec.name
        )));
    }
    // STT_FUNC symbols in this section: exactly one, at offset 0
    let funcs: Vec<&Symbol<'_>> = elf
        .symbols
        .iter()
        .filter(|s| usize::from(s.shndx) == idx && s.kind == elf::STT_FUNC)
        .collect();
    let name = match funcs.as_slice() {
        [f] if f.value == 0 => f.name,
        [] => return Err(BpfError::Elf(format!("{}: no function symbol", sec.name))),
        _ => {
            return Err(unsupported(format!(
                "{}: several functions in one section; one program per section, helpers inlined",
                sec.name
            )))
        }
    };
    let insns: Vec<[u8; 8]> = sec
        .data
        .chunks_exact(8)
        .map(|c| c.try_into().expect("8 bytes"))
        .collect();

    let mut relocs = Vec::new();
    for rel_sec in elf.sections.iter().filter(|s| s.info as usize == idx) {
        match rel_sec.kind {
            elf::SHT_REL => {}
            elf::SHT_RELA => {
                return Err(unsupported(format!("{}: RELA relocations", rel_sec.name)))
            }
            _ => continue,
        }
        for rel in Elf::rels(rel_sec)? {
            let what = || format!("{} relocation at offset {:#x}", sec.name, rel.offset);
            let insn = usize::try_from(rel.offset / 8)
                .ok()
                .filter(|&i| rel.offset.is_multiple_of(8) && i < insns.len())
                .ok_or_else(|| BpfError::Elf(format!("{} is not on an instruction", what())))?;
            let sym = elf
                .symbols
                .get(rel.sym as usize)
                .ok_or_else(|| BpfError::Elf(format!("{}: bad symbol index", what())))?;
            let opcode = insns[insn][0];
            let kind = match rel.kind {
                R_BPF_64_64 if Some(usize::from(sym.shndx)) == maps_idx => {
                    if opcode != OP_LD_IMM64 || insn + 1 >= insns.len() {
                        return Err(BpfError::Elf(format!(
                            "{}: map reference not on an ld_imm64",
                            what()
                        )));
                    }
                    // the addend of a REL entry is the immediate itself (a
                    // static map is its section symbol plus its offset)
                    let off = sym.value.wrapping_add(imm(&insns[insn]) as i64 as u64);
                    let (_, map, _) = maps.iter().find(|(o, _, _)| *o == off).ok_or_else(|| {
                        BpfError::Elf(format!("{}: no map at maps+{off}", what()))
                    })?;
                    RelocKind::Map(map.clone())
                }
                R_BPF_64_64 => {
                    if sym.shndx == elf::SHN_UNDEF || sym.shndx >= elf::SHN_LORESERVE {
                        return Err(unsupported(format!(
                            "{}: reference to extern variable {}; only kfunc calls may be extern",
                            what(),
                            sym.name
                        )));
                    } else {
                        let target = elf.section_name(sym.shndx);
                        return Err(unsupported(format!(
                            "{}: reference to {} in {target}: global variables are not supported; use a map",
                            what(),
                            if sym.name.is_empty() { target } else { sym.name }
                        )));
                    }
                }
                R_BPF_64_32 if opcode == OP_CALL => {
                    if sym.shndx != elf::SHN_UNDEF {
                        return Err(unsupported(format!(
                            "{}: call of the non-inlined function {}: BPF-to-BPF calls are not \
                             supported; mark it static __always_inline",
                            what(),
                            sym.name
                        )));
                    }
                    RelocKind::Kfunc(sym.name.to_string())
                }
                other => {
                    return Err(unsupported(format!(
                        "{}: relocation type {other} on opcode {opcode:#04x}",
                        what()
                    )))
                }
            };
            relocs.push(Reloc { insn, kind });
        }
    }
    relocs.sort_by_key(|r| r.insn);
    Ok(ProgramSpec {
        name: name.to_string(),
        section: sec.name.to_string(),
        kind,
        insns,
        relocs,
    })
}

fn imm(insn: &[u8; 8]) -> i32 {
    i32::from_le_bytes(insn[4..8].try_into().expect("4 bytes"))
}

/// Makes an `ld_imm64` load the map behind `fd`.
pub(super) fn patch_map_fd(insn: &mut [u8; 8], fd: i32) {
    set_src_reg(insn, BPF_PSEUDO_MAP_FD);
    insn[4..8].copy_from_slice(&fd.to_le_bytes());
}

/// Makes a `call` call the kernel function with BTF id `btf_id` in vmlinux
/// (`off` 0 selects vmlinux rather than a module's BTF from `fd_array`).
pub(super) fn patch_kfunc(insn: &mut [u8; 8], btf_id: u32) {
    set_src_reg(insn, BPF_PSEUDO_KFUNC_CALL);
    insn[2..4].copy_from_slice(&0i16.to_le_bytes());
    insn[4..8].copy_from_slice(&btf_id.to_le_bytes());
}

/// Byte 1 of an instruction is `dst_reg:4 | src_reg:4` (dst in the low nibble).
fn set_src_reg(insn: &mut [u8; 8], src: u8) {
    insn[1] = (insn[1] & 0x0f) | (src << 4);
}
