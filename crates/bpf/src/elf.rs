//! A minimal reader for ELF64 little-endian relocatable objects, the format
//! `clang -target bpf -c` writes. It reads only what the loader needs (section
//! headers, the symbol table, REL entries) and bounds-checks every access, so
//! malformed input yields an error, never a panic.

use crate::BpfError;

/// `e_machine` of eBPF objects.
const EM_BPF: u16 = 247;
const ET_REL: u16 = 1;
pub(super) const SHT_SYMTAB: u32 = 2;
pub(super) const SHT_RELA: u32 = 4;
pub(super) const SHT_NOBITS: u32 = 8;
pub(super) const SHT_REL: u32 = 9;
pub(super) const SHF_EXECINSTR: u64 = 0x4;
/// Symbol types (low nibble of `st_info`).
pub(super) const STT_FUNC: u8 = 2;
pub(super) const STT_SECTION: u8 = 3;
/// `st_shndx` of undefined symbols (externs).
pub(super) const SHN_UNDEF: u16 = 0;
/// Section indices from here up are special (ABS, COMMON, XINDEX).
pub(super) const SHN_LORESERVE: u16 = 0xff00;

fn err(msg: impl Into<String>) -> BpfError {
    BpfError::Elf(msg.into())
}

/// `len` bytes at `off`, or an error naming `what`.
fn slice<'a>(data: &'a [u8], off: u64, len: u64, what: &str) -> Result<&'a [u8], BpfError> {
    let end = off
        .checked_add(len)
        .ok_or_else(|| err(format!("{what}: offset overflows")))?;
    usize::try_from(off)
        .ok()
        .zip(usize::try_from(end).ok())
        .and_then(|(s, e)| data.get(s..e))
        .ok_or_else(|| {
            err(format!(
                "{what} lies outside the file ({off}+{len} > {})",
                data.len()
            ))
        })
}

// Callers pass offsets inside a slice whose length they checked.
fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// The NUL-terminated string at `off` of a string table.
pub(super) fn cstr_at(table: &[u8], off: usize) -> Option<&str> {
    let rest = table.get(off..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&rest[..end]).ok()
}

#[derive(Debug)]
pub(super) struct Section<'a> {
    pub name: &'a str,
    pub kind: u32,
    pub flags: u64,
    pub link: u32,
    pub info: u32,
    /// The contents (empty for `SHT_NOBITS`).
    pub data: &'a [u8],
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Symbol<'a> {
    pub name: &'a str,
    /// `STT_*`.
    pub kind: u8,
    pub shndx: u16,
    pub value: u64,
    pub size: u64,
}

pub(super) struct Elf<'a> {
    pub sections: Vec<Section<'a>>,
    pub symbols: Vec<Symbol<'a>>,
}

/// One `Elf64_Rel` entry.
pub(super) struct Rel {
    pub offset: u64,
    pub sym: u32,
    pub kind: u32,
}

impl<'a> Elf<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Elf<'a>, BpfError> {
        let hdr = slice(data, 0, 64, "ELF header")?;
        if hdr[..4] != *b"\x7fELF" {
            return Err(err("not an ELF file (bad magic)"));
        }
        if hdr[4] != 2 || hdr[5] != 1 {
            return Err(err("not a 64-bit little-endian ELF file"));
        }
        let machine = u16_at(hdr, 18);
        if machine != EM_BPF {
            return Err(err(format!(
                "e_machine is {machine}, not EM_BPF (247): compile with clang -target bpf"
            )));
        }
        if u16_at(hdr, 16) != ET_REL {
            return Err(err("not a relocatable object (compile with -c)"));
        }
        let shoff = u64_at(hdr, 0x28);
        let shentsize = u16_at(hdr, 0x3a);
        let shnum = u16_at(hdr, 0x3c);
        let shstrndx = u16_at(hdr, 0x3e);
        if shentsize != 64 {
            return Err(err(format!(
                "section header size is {shentsize}, expected 64"
            )));
        }
        if shnum == 0 || shstrndx >= shnum {
            return Err(err("no section headers or no section name table"));
        }
        let table = slice(data, shoff, u64::from(shnum) * 64, "section header table")?;
        let raw: Vec<&[u8]> = table.chunks_exact(64).collect();
        let contents = |h: &[u8], what: &str| -> Result<&'a [u8], BpfError> {
            if u32_at(h, 4) == SHT_NOBITS {
                return Ok(&[]);
            }
            slice(data, u64_at(h, 24), u64_at(h, 32), what)
        };
        let shstrtab = contents(raw[usize::from(shstrndx)], "section name table")?;
        let mut sections = Vec::with_capacity(raw.len());
        for (i, h) in raw.iter().enumerate() {
            let name = cstr_at(shstrtab, u32_at(h, 0) as usize)
                .ok_or_else(|| err(format!("section {i} has a bad name offset")))?;
            sections.push(Section {
                name,
                kind: u32_at(h, 4),
                flags: u64_at(h, 8),
                link: u32_at(h, 40),
                info: u32_at(h, 44),
                data: contents(h, name)?,
            });
        }
        let symbols = match sections.iter().find(|s| s.kind == SHT_SYMTAB) {
            Some(symtab) => {
                let strtab = sections
                    .get(symtab.link as usize)
                    .ok_or_else(|| err("symbol table links to a missing string table"))?
                    .data;
                let mut symbols = Vec::with_capacity(symtab.data.len() / 24);
                for s in symtab.data.chunks_exact(24) {
                    symbols.push(Symbol {
                        name: cstr_at(strtab, u32_at(s, 0) as usize)
                            .ok_or_else(|| err("a symbol has a bad name offset"))?,
                        kind: s[4] & 0xf,
                        shndx: u16_at(s, 6),
                        value: u64_at(s, 8),
                        size: u64_at(s, 16),
                    });
                }
                symbols
            }
            None => Vec::new(),
        };
        Ok(Elf { sections, symbols })
    }

    /// The entries of a `SHT_REL` section.
    pub fn rels(section: &Section<'_>) -> Result<Vec<Rel>, BpfError> {
        if !section.data.len().is_multiple_of(16) {
            return Err(err(format!(
                "{}: size is not a multiple of 16",
                section.name
            )));
        }
        Ok(section
            .data
            .chunks_exact(16)
            .map(|r| {
                let info = u64_at(r, 8);
                Rel {
                    offset: u64_at(r, 0),
                    sym: (info >> 32) as u32,
                    kind: info as u32,
                }
            })
            .collect())
    }

    /// The name of section `idx`, for messages.
    pub fn section_name(&self, idx: u16) -> &str {
        self.sections.get(usize::from(idx)).map_or("?", |s| s.name)
    }
}
