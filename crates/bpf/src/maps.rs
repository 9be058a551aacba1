//! Maps: creation and access from userspace.
//!
//! Keys and values are byte slices whose lengths are checked against the
//! map's definition before each syscall: the kernel reads and writes exactly
//! `key_size`/`value_size` bytes (per-CPU maps: a rounded-up slot per
//! possible CPU) through the pointers we pass, so a short buffer would be
//! memory corruption, not an error.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::OnceLock;

use std::path::Path;

use crate::pin::{self, PinOutcome};
use crate::sys::{self, Attr};
use crate::{BpfError, MapDef};

mod batch;
pub use batch::BatchFailed;

const BPF_ANY: u64 = 0;
const CPU_POSSIBLE: &str = "/sys/devices/system/cpu/possible";

/// A map created by [`load`](super::load); closed on drop (the kernel keeps
/// it alive while a loaded program uses it).
#[derive(Debug)]
pub struct Map {
    fd: OwnedFd,
    name: String,
    def: MapDef,
    pin: Option<PinOutcome>,
}

/// BPF_MAP_CREATE for `def`.
pub(crate) fn create_fd(name: &str, def: &MapDef) -> Result<OwnedFd, BpfError> {
    let mut attr = Attr::new();
    attr.u32(0, def.map_type)
        .u32(4, def.key_size)
        .u32(8, def.value_size)
        .u32(12, def.max_entries)
        .u32(16, def.flags)
        .bytes(28, sys::obj_name(name)); // map_name[16]
                                         // SAFETY: the attr holds no pointers.
    unsafe { sys::bpf_fd(sys::BPF_MAP_CREATE, &mut attr) }.map_err(sys::map_err(
        "BPF_MAP_CREATE",
        format!("map {name} {def:?}"),
    ))
}

fn is_percpu(map_type: u32) -> bool {
    // PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH, PERCPU_CGROUP_STORAGE
    matches!(map_type, 5 | 6 | 10 | 21)
}

impl Map {
    /// BPF_MAP_CREATE: a fresh map (nothing shared).
    pub(crate) fn create(name: &str, def: MapDef) -> Result<Map, BpfError> {
        Ok(Map {
            fd: create_fd(name, &def)?,
            name: name.to_string(),
            def,
            pin: None,
        })
    }

    /// The map `name` under `dir`, re-used if its layout matches (see [`crate::pin`]).
    pub(crate) fn pinned(dir: &Path, name: &str, def: MapDef) -> Result<Map, BpfError> {
        let (fd, outcome) = pin::open_or_create(dir, name, def)?;
        Ok(Map {
            fd,
            name: name.to_string(),
            def,
            pin: Some(outcome),
        })
    }

    /// The same kernel map for another object whose definition is `def`,
    /// which must lay it out the same way.
    pub(crate) fn shared(&self, def: &MapDef) -> Result<Map, BpfError> {
        let layout = |d: &MapDef| (d.map_type, d.key_size, d.value_size, d.max_entries, d.flags);
        if layout(def) != layout(&self.def) {
            return Err(BpfError::Unsupported(format!(
                "map {} is defined differently in two objects ({:?} and {:?}); define it once, \
                 in a header both include",
                self.name, self.def, def
            )));
        }
        let fd = self.fd.try_clone().map_err(|source| BpfError::Io {
            path: format!("dup of map {}", self.name).into(),
            source,
        })?;
        Ok(Map {
            fd,
            name: self.name.clone(),
            def: self.def,
            pin: self.pin,
        })
    }

    /// The map `name` under `dir` with layout `def`, outside any object
    /// load: the pinned one if its layout matches, else a fresh one, pinned
    /// (for a reader or writer of maps that programs load with the same
    /// definition, e.g. weftd's policy maps, independent of the programs).
    pub fn open_pinned(dir: &Path, name: &str, def: MapDef) -> Result<Map, BpfError> {
        Map::pinned(dir, name, def)
    }

    /// Another handle on the same kernel map (a dup of its fd), e.g. to
    /// keep a map beyond the [`crate::Loaded`] it came from.
    pub fn try_clone(&self) -> Result<Map, BpfError> {
        self.shared(&self.def)
    }

    /// For a pinned map, whether this load created, re-used or replaced it.
    pub fn pin_outcome(&self) -> Option<PinOutcome> {
        self.pin
    }

    pub fn def(&self) -> &MapDef {
        &self.def
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, what: &'static str, got: usize, expected: u32) -> Result<(), BpfError> {
        if got == expected as usize {
            return Ok(());
        }
        Err(BpfError::Size {
            map: self.name.clone(),
            what,
            expected: expected as usize,
            got,
        })
    }

    fn kind(&self, percpu: bool) -> Result<(), BpfError> {
        match (is_percpu(self.def.map_type), percpu) {
            (true, false) => Err(BpfError::MapKind {
                map: self.name.clone(),
                reason: "per-CPU map: use lookup_percpu",
            }),
            (false, true) => Err(BpfError::MapKind {
                map: self.name.clone(),
                reason: "not a per-CPU map: use lookup",
            }),
            _ => Ok(()),
        }
    }

    /// The map fd with `key`; `value` (if any) at offset 16.
    fn elem_attr(&self, key: *const u8, value: *const u8) -> Attr {
        let mut attr = Attr::new();
        // map_fd @0, key @8, value/next_key @16, flags @24
        attr.fd(0, self.fd.as_fd()).ptr(8, key).ptr(16, value);
        attr
    }

    /// Inserts or replaces (`BPF_ANY`). For a per-CPU map `value` is one
    /// CPU's value and is written to every CPU.
    pub fn update(&self, key: &[u8], value: &[u8]) -> Result<(), BpfError> {
        self.check("key", key.len(), self.def.key_size)?;
        self.check("value", value.len(), self.def.value_size)?;
        let buf;
        let value = if is_percpu(self.def.map_type) {
            let slot = round8(value.len());
            let mut b = vec![0u8; slot * possible_cpus()?];
            b.chunks_exact_mut(slot)
                .for_each(|c| c[..value.len()].copy_from_slice(value));
            buf = b;
            &buf[..]
        } else {
            value
        };
        let mut attr = self.elem_attr(key.as_ptr(), value.as_ptr());
        attr.u64(24, BPF_ANY);
        // key and value have the sizes the kernel reads (checked above)
        // SAFETY: every pointer in `attr` borrows a buffer (a local or an argument)
        // that outlives the call and has the size the attr states.
        unsafe { sys::bpf(sys::BPF_MAP_UPDATE_ELEM, &mut attr) }.map_err(sys::map_err(
            "BPF_MAP_UPDATE_ELEM",
            format!("map {}", self.name),
        ))?;
        Ok(())
    }

    /// Deletes `key`; `false` if it was absent.
    pub fn delete(&self, key: &[u8]) -> Result<bool, BpfError> {
        self.check("key", key.len(), self.def.key_size)?;
        let mut attr = self.elem_attr(key.as_ptr(), std::ptr::null());
        // SAFETY: every pointer in `attr` borrows a buffer (a local or an argument)
        // that outlives the call and has the size the attr states.
        match unsafe { sys::bpf(sys::BPF_MAP_DELETE_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(libc::ENOENT) => Ok(false),
            Err(e) => Err(BpfError::sys(
                "BPF_MAP_DELETE_ELEM",
                format!("map {}", self.name),
                e,
            )),
        }
    }

    /// Reads `out.len()` bytes for `key`; `false` if absent.
    fn lookup_into(&self, key: &[u8], out: &mut [u8]) -> Result<bool, BpfError> {
        self.check("key", key.len(), self.def.key_size)?;
        let mut attr = self.elem_attr(key.as_ptr(), out.as_mut_ptr());
        // SAFETY: every pointer in `attr` borrows a buffer (a local or an argument)
        // that outlives the call and has the size the attr states.
        match unsafe { sys::bpf(sys::BPF_MAP_LOOKUP_ELEM, &mut attr) } {
            Ok(_) => Ok(true),
            Err(libc::ENOENT) => Ok(false),
            Err(e) => Err(BpfError::sys(
                "BPF_MAP_LOOKUP_ELEM",
                format!("map {}", self.name),
                e,
            )),
        }
    }

    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BpfError> {
        self.kind(false)?;
        let mut v = vec![0u8; self.def.value_size as usize];
        Ok(self.lookup_into(key, &mut v)?.then_some(v))
    }

    /// One value per possible CPU (index = CPU number).
    pub fn lookup_percpu(&self, key: &[u8]) -> Result<Option<Vec<Vec<u8>>>, BpfError> {
        self.kind(true)?;
        let size = self.def.value_size as usize;
        let slot = round8(size);
        let mut buf = vec![0u8; slot * possible_cpus()?];
        if !self.lookup_into(key, &mut buf)? {
            return Ok(None);
        }
        Ok(Some(
            buf.chunks_exact(slot).map(|c| c[..size].to_vec()).collect(),
        ))
    }

    /// Every key, via BPF_MAP_GET_NEXT_KEY (a NULL key yields the first). At
    /// most `max_entries` keys, so concurrent deletes (which restart the walk
    /// at the first key) cannot make this loop forever.
    pub fn keys(&self) -> Result<Vec<Vec<u8>>, BpfError> {
        let size = self.def.key_size as usize;
        let mut keys: Vec<Vec<u8>> = Vec::new();
        while keys.len() < self.def.max_entries as usize {
            let mut next = vec![0u8; size];
            let prev = keys.last().map_or(std::ptr::null(), |k| k.as_ptr());
            let mut attr = self.elem_attr(prev, next.as_mut_ptr());
            // SAFETY: every pointer in `attr` borrows a buffer (a local or an argument)
            // that outlives the call and has the size the attr states.
            match unsafe { sys::bpf(sys::BPF_MAP_GET_NEXT_KEY, &mut attr) } {
                Ok(_) => keys.push(next),
                Err(libc::ENOENT) => break,
                Err(e) => {
                    return Err(BpfError::sys(
                        "BPF_MAP_GET_NEXT_KEY",
                        format!("map {}", self.name),
                        e,
                    ))
                }
            }
        }
        Ok(keys)
    }
}

impl AsFd for Map {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn round8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// How many CPUs the kernel sizes per-CPU values for: the number of CPUs in
/// the possible mask (e.g. `0-3,8-11` is 8), read once.
pub fn possible_cpus() -> Result<usize, BpfError> {
    static CPUS: OnceLock<usize> = OnceLock::new();
    if let Some(n) = CPUS.get() {
        return Ok(*n);
    }
    let text = std::fs::read_to_string(CPU_POSSIBLE).map_err(|source| BpfError::Io {
        path: CPU_POSSIBLE.into(),
        source,
    })?;
    let n = parse_cpu_list(&text).ok_or_else(|| BpfError::Io {
        path: CPU_POSSIBLE.into(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad cpu list {text:?}"),
        ),
    })?;
    Ok(*CPUS.get_or_init(|| n))
}

/// Counts the CPUs of a kernel cpu list (`0`, `0-3`, `0-3,8-11`).
fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut n = 0;
    for part in s.trim().split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
        n += b.checked_sub(a)? + 1;
    }
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0\n"), Some(1));
        assert_eq!(parse_cpu_list("0-1\n"), Some(2));
        assert_eq!(parse_cpu_list("0-3,8-11"), Some(8));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert!(possible_cpus().unwrap() >= 1);
    }

    #[test]
    fn rounds_values_to_8() {
        assert_eq!((round8(1), round8(8), round8(12)), (8, 8, 16));
    }
}
