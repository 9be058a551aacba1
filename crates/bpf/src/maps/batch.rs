//! `BPF_MAP_UPDATE_BATCH` and `BPF_MAP_DELETE_BATCH` (Linux 5.6+): many
//! elements of one map in one syscall, for writers that change tens of
//! entries at a time (weftd's Service maps). The kernel applies the
//! elements one after another, in order, each as `BPF_MAP_UPDATE_ELEM` /
//! `BPF_MAP_DELETE_ELEM` would (so a reader sees the same sequence of
//! states), and stops at the first that fails, telling how many it did.
//! A kernel without the commands, or a map type without them, refuses the
//! batch before touching anything: [`BatchFailed::refused`] says so, and
//! the caller writes the elements one at a time.

use std::os::fd::AsFd;

use super::{is_percpu, Map, BPF_ANY};
use crate::sys::{self, Attr};
use crate::BpfError;

/// `ENOTSUPP`, the kernel-internal errno `bpf_map_do_batch` returns for a
/// map type without the batch operation.
const ENOTSUPP: i32 = 524;

/// A batch the kernel did not finish.
#[derive(Debug)]
pub struct BatchFailed {
    /// How many leading elements were applied before `error`.
    pub done: usize,
    pub error: BpfError,
}

impl BatchFailed {
    fn before(error: BpfError) -> Self {
        BatchFailed { done: 0, error }
    }

    /// Nothing was applied because batches are not available here (a
    /// kernel before 5.6 does not know the command: EINVAL; a map type
    /// without it: ENOTSUPP/EOPNOTSUPP; a per-CPU map: not done here):
    /// write the elements one at a time instead.
    pub fn refused(&self) -> bool {
        self.done == 0
            && match &self.error {
                BpfError::Syscall { errno, .. } => {
                    matches!(*errno, libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
                }
                BpfError::MapKind { .. } => true,
                _ => false,
            }
    }
}

impl Map {
    /// How many whole keys `keys` holds (its length must be a multiple of
    /// the key size: the kernel reads `count * key_size` bytes).
    fn batch_len(&self, keys: &[u8]) -> Result<usize, BatchFailed> {
        let size = self.def.key_size as usize;
        if size == 0 || !keys.len().is_multiple_of(size) {
            return Err(BatchFailed::before(BpfError::Size {
                map: self.name.clone(),
                what: "batch of keys",
                expected: keys.len().div_ceil(size.max(1)) * size,
                got: keys.len(),
            }));
        }
        Ok(keys.len() / size)
    }

    /// One batch command over `n` elements from the `keys` (and `values`)
    /// pointers; the count the kernel reports back and its error, if any.
    fn batch(
        &self,
        cmd: u32,
        keys: *const u8,
        values: *const u8,
        n: usize,
    ) -> (usize, Option<i32>) {
        let mut attr = Attr::new();
        // batch: keys @16, values @24, count @32, map_fd @36, elem_flags
        // @40, flags @48
        attr.ptr(16, keys)
            .ptr(24, values)
            .u32(32, n as u32)
            .fd(36, self.fd.as_fd())
            .u64(40, BPF_ANY);
        // SAFETY: `keys` (and for an update `values`) point to n elements
        // of the map's key (value) size that outlive the call (checked by
        // the callers); the kernel writes only `count` back into `attr`.
        match unsafe { sys::bpf(cmd, &mut attr) } {
            Ok(_) => (n, None),
            // an element that failed leaves `count` at its index (< n);
            // a batch refused before the first element leaves `count` as
            // we set it: nothing was done
            Err(e) => match attr.get_u32(32) as usize {
                c if c < n => (c, Some(e)),
                _ => (0, Some(e)),
            },
        }
    }

    /// Inserts or replaces (`BPF_ANY`) every `(key, value)` of the
    /// concatenated `keys` and `values`, in order, in one syscall. Not for
    /// per-CPU maps (refused).
    pub fn update_batch(&self, keys: &[u8], values: &[u8]) -> Result<(), BatchFailed> {
        if is_percpu(self.def.map_type) {
            return Err(BatchFailed::before(BpfError::MapKind {
                map: self.name.clone(),
                reason: "per-CPU map: batches not supported here",
            }));
        }
        let n = self.batch_len(keys)?;
        let want = n * self.def.value_size as usize;
        if values.len() != want {
            return Err(BatchFailed::before(BpfError::Size {
                map: self.name.clone(),
                what: "batch of values",
                expected: want,
                got: values.len(),
            }));
        }
        if n == 0 {
            return Ok(());
        }
        match self.batch(sys::BPF_MAP_UPDATE_BATCH, keys.as_ptr(), values.as_ptr(), n) {
            (_, None) => Ok(()),
            (done, Some(e)) => Err(BatchFailed {
                done,
                error: BpfError::sys("BPF_MAP_UPDATE_BATCH", format!("map {}", self.name), e),
            }),
        }
    }

    /// Deletes every key of the concatenated `keys`, in order, in as few
    /// syscalls as absent keys allow (the kernel stops at one with ENOENT;
    /// it is skipped, as [`Map::delete`] would). Returns how many were
    /// present.
    pub fn delete_batch(&self, keys: &[u8]) -> Result<usize, BatchFailed> {
        let n = self.batch_len(keys)?;
        let size = self.def.key_size as usize;
        let (mut at, mut deleted) = (0, 0);
        while at < n {
            let rest = &keys[at * size..];
            match self.batch(
                sys::BPF_MAP_DELETE_BATCH,
                rest.as_ptr(),
                std::ptr::null(),
                n - at,
            ) {
                (done, None) => return Ok(deleted + done),
                (done, Some(libc::ENOENT)) => {
                    deleted += done;
                    at += done + 1;
                }
                (done, Some(e)) => {
                    return Err(BatchFailed {
                        done: at + done,
                        error: BpfError::sys(
                            "BPF_MAP_DELETE_BATCH",
                            format!("map {}", self.name),
                            e,
                        ),
                    })
                }
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MapDef;

    const HASH: u32 = 1;
    const ARRAY: u32 = 2;

    fn map(map_type: u32) -> Map {
        let def = MapDef {
            map_type,
            key_size: 4,
            value_size: 8,
            max_entries: 64,
            flags: 0,
            pinning: 0,
        };
        Map::create("weft_batch_t", def).expect("BPF_MAP_CREATE (needs root)")
    }

    fn keys(ks: &[u32]) -> Vec<u8> {
        ks.iter().flat_map(|k| k.to_ne_bytes()).collect()
    }

    fn values(vs: &[u64]) -> Vec<u8> {
        vs.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    fn get(m: &Map, k: u32) -> Option<u64> {
        m.lookup(&k.to_ne_bytes())
            .unwrap()
            .map(|b| u64::from_ne_bytes(b.try_into().unwrap()))
    }

    #[test]
    fn hash_maps_take_batches_in_order_privileged() {
        assert_eq!(unsafe { libc::geteuid() }, 0, "needs root");
        let m = map(HASH);
        // a key twice: the later value wins, as with one update each
        m.update_batch(&keys(&[1, 2, 3, 1]), &values(&[10, 20, 30, 11]))
            .unwrap();
        assert_eq!(
            [get(&m, 1), get(&m, 2), get(&m, 3)],
            [Some(11), Some(20), Some(30)]
        );
        // absent keys (4, 5) are skipped, the others deleted
        assert_eq!(m.delete_batch(&keys(&[4, 1, 5, 3])).unwrap(), 2);
        assert_eq!([get(&m, 1), get(&m, 2), get(&m, 3)], [None, Some(20), None]);
        assert_eq!(m.delete_batch(&keys(&[])).unwrap(), 0);
        m.update_batch(&[], &[]).unwrap();
        // sizes are checked before the kernel reads anything
        let e = m.update_batch(&keys(&[1]), &values(&[])).unwrap_err();
        assert!(!e.refused() && e.done == 0, "{e:?}");
        let e = m.delete_batch(&[0u8; 3]).unwrap_err();
        assert!(!e.refused(), "{e:?}");
    }

    #[test]
    fn a_full_map_stops_the_batch_where_it_filled_privileged() {
        assert_eq!(unsafe { libc::geteuid() }, 0, "needs root");
        let m = map(HASH);
        let ks: Vec<u32> = (0..70).collect();
        let e = m.update_batch(&keys(&ks), &values(&[7; 70])).unwrap_err();
        assert_eq!(e.done, 64, "{e:?}");
        assert!(!e.refused());
        assert_eq!(e.error.errno(), Some(libc::E2BIG));
    }

    #[test]
    fn a_map_type_without_the_batch_refuses_it_privileged() {
        assert_eq!(unsafe { libc::geteuid() }, 0, "needs root");
        // arrays cannot delete at all: the batch is refused untouched
        let m = map(ARRAY);
        let e = m.delete_batch(&keys(&[1])).unwrap_err();
        assert!(e.refused(), "{e:?}");
    }
}
