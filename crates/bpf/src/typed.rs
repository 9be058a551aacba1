//! Typed views of maps: keys and values as `#[repr(C)]` structs instead of
//! byte slices. The sizes are checked once, when the view is made, against
//! the map's definition; the struct layouts themselves are the ABI crate's
//! business (`weft-bpf-abi` proves them against the C headers).

use std::marker::PhantomData;

use crate::{BatchFailed, BpfError, Map, Program};

/// Plain data the kernel may read and write byte for byte.
///
/// # Safety
/// The type must be `#[repr(C)]` (or a primitive or array of them), `Copy`,
/// have no padding bytes (every byte is a declared field, so reading it as
/// bytes reads initialised memory), and be valid for any bit pattern.
pub unsafe trait Pod: Copy + 'static {}

// SAFETY: primitives and byte arrays have no padding and accept any bits.
unsafe impl Pod for u8 {}
// SAFETY: as above.
unsafe impl Pod for u16 {}
// SAFETY: as above.
unsafe impl Pod for u32 {}
// SAFETY: as above.
unsafe impl Pod for u64 {}
// SAFETY: as above.
unsafe impl Pod for i32 {}
// SAFETY: as above.
unsafe impl Pod for i64 {}
// SAFETY: an array of Pod has no padding between its elements.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

/// The bytes of `v`.
pub fn bytes_of<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: T is Pod: size_of::<T>() initialised bytes, no padding.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
}

/// A `T` from exactly `size_of::<T>()` bytes.
pub fn from_bytes<T: Pod>(b: &[u8]) -> Option<T> {
    (b.len() == std::mem::size_of::<T>())
        // SAFETY: b holds size_of::<T>() bytes and T accepts any bit pattern;
        // read_unaligned needs no alignment.
        .then(|| unsafe { std::ptr::read_unaligned(b.as_ptr() as *const T) })
}

/// A hash map (or LRU hash, or array) seen through key and value types.
#[derive(Debug)]
pub struct TypedMap<'m, K, V> {
    map: &'m Map,
    _kv: PhantomData<(K, V)>,
}

fn sizes(map: &Map, key: usize, value: usize) -> Result<(), BpfError> {
    for (what, got, want) in [
        ("key", key, map.def().key_size),
        ("value", value, map.def().value_size),
    ] {
        if got != want as usize {
            return Err(BpfError::Size {
                map: map.name().to_string(),
                what,
                expected: want as usize,
                got,
            });
        }
    }
    Ok(())
}

impl<'m, K: Pod, V: Pod> TypedMap<'m, K, V> {
    pub fn new(map: &'m Map) -> Result<Self, BpfError> {
        sizes(map, std::mem::size_of::<K>(), std::mem::size_of::<V>())?;
        Ok(TypedMap {
            map,
            _kv: PhantomData,
        })
    }

    pub fn get(&self, key: &K) -> Result<Option<V>, BpfError> {
        Ok(self.map.lookup(bytes_of(key))?.and_then(|b| from_bytes(&b)))
    }

    pub fn insert(&self, key: &K, value: &V) -> Result<(), BpfError> {
        self.map.update(bytes_of(key), bytes_of(value))
    }

    /// `false` if the key was absent.
    pub fn remove(&self, key: &K) -> Result<bool, BpfError> {
        self.map.delete(bytes_of(key))
    }

    /// Every `(key, value)` in one `BPF_MAP_UPDATE_BATCH` (see
    /// [`Map::update_batch`]).
    pub fn insert_batch(&self, entries: &[(K, V)]) -> Result<(), BatchFailed> {
        let mut keys = Vec::with_capacity(entries.len() * std::mem::size_of::<K>());
        let mut values = Vec::with_capacity(entries.len() * std::mem::size_of::<V>());
        for (k, v) in entries {
            keys.extend_from_slice(bytes_of(k));
            values.extend_from_slice(bytes_of(v));
        }
        self.map.update_batch(&keys, &values)
    }

    /// Every key in `BPF_MAP_DELETE_BATCH`es (see [`Map::delete_batch`]);
    /// how many were present.
    pub fn remove_batch(&self, keys: &[K]) -> Result<usize, BatchFailed> {
        let bytes: Vec<u8> = keys.iter().flat_map(|k| bytes_of(k).to_vec()).collect();
        self.map.delete_batch(&bytes)
    }

    pub fn keys(&self) -> Result<Vec<K>, BpfError> {
        Ok(self
            .map
            .keys()?
            .iter()
            .filter_map(|b| from_bytes(b))
            .collect())
    }
}

/// An LPM trie: keys start with a `u32` prefix length in bits (the trie
/// counts every key byte after it, family and padding included).
pub type LpmTrie<'m, K, V> = TypedMap<'m, K, V>;

/// A per-CPU array of counters or values.
#[derive(Debug)]
pub struct PerCpuArray<'m, V> {
    map: &'m Map,
    _v: PhantomData<V>,
}

impl<'m, V: Pod> PerCpuArray<'m, V> {
    pub fn new(map: &'m Map) -> Result<Self, BpfError> {
        sizes(map, 4, std::mem::size_of::<V>())?;
        Ok(PerCpuArray {
            map,
            _v: PhantomData,
        })
    }

    /// One value per possible CPU.
    pub fn get(&self, index: u32) -> Result<Vec<V>, BpfError> {
        Ok(self
            .map
            .lookup_percpu(&index.to_ne_bytes())?
            .unwrap_or_default()
            .iter()
            .filter_map(|b| from_bytes(b))
            .collect())
    }

    pub fn len(&self) -> u32 {
        self.map.def().max_entries
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PerCpuArray<'_, u64> {
    /// Slot `index` summed over CPUs (counters).
    pub fn sum(&self, index: u32) -> Result<u64, BpfError> {
        Ok(self.get(index)?.iter().sum())
    }
}

/// A `BPF_MAP_TYPE_PROG_ARRAY`: tail-call targets by index.
#[derive(Debug)]
pub struct ProgArray<'m> {
    map: &'m Map,
}

/// `BPF_MAP_TYPE_PROG_ARRAY`.
pub const MAP_TYPE_PROG_ARRAY: u32 = 3;

impl<'m> ProgArray<'m> {
    pub fn new(map: &'m Map) -> Result<Self, BpfError> {
        if map.def().map_type != MAP_TYPE_PROG_ARRAY {
            return Err(BpfError::MapKind {
                map: map.name().to_string(),
                reason: "not a program array",
            });
        }
        Ok(ProgArray { map })
    }

    /// Makes slot `index` tail-call `prog`.
    pub fn set(&self, index: u32, prog: &Program) -> Result<(), BpfError> {
        use std::os::fd::{AsFd, AsRawFd};
        let fd = prog.as_fd().as_raw_fd() as u32;
        self.map.update(&index.to_ne_bytes(), &fd.to_ne_bytes())
    }

    /// Empties slot `index`; `false` if it was empty.
    pub fn clear(&self, index: u32) -> Result<bool, BpfError> {
        self.map.delete(&index.to_ne_bytes())
    }
}
