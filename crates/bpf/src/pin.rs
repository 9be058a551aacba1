//! Maps that outlive the loader: pinned under bpffs.
//!
//! A map defined with `pinning = PIN_BY_NAME` and loaded with a pin
//! directory ([`crate::LoadOptions::pin_dir`]) lives at `<dir>/<name>`. The
//! next load re-uses it when its layout (type, key and value size, entries,
//! flags) is the one the object asks for, and replaces it when not: a map of
//! another layout would be misread by the new programs. The directory is per
//! agent instance (e.g. `/sys/fs/bpf/weft/<node>`), so parallel labs and
//! tests never share a map by accident.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::sys::{self, Attr};
use crate::{BpfError, MapDef};

/// `BPF_FS_MAGIC`: `statfs` of a bpffs mount.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

fn c_path(path: &Path) -> Result<CString, BpfError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| BpfError::Pin(format!("{} contains a NUL byte", path.display())))
}

/// Whether `dir` lies on a bpffs mount.
pub fn is_bpffs(dir: &Path) -> bool {
    let Ok(c) = c_path(dir) else { return false };
    // SAFETY: an all-zero statfs is a valid out buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a NUL-terminated path; st is a live, writable statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as i64 == BPF_FS_MAGIC
}

/// Creates `dir` (and parents) on bpffs. Refuses, before creating anything,
/// when the nearest existing ancestor is not on bpffs (a typo or an
/// unmounted `/sys/fs/bpf` must not leave directories behind).
pub fn prepare_dir(dir: &Path) -> Result<(), BpfError> {
    let existing = dir
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    if !is_bpffs(existing) {
        return Err(BpfError::Pin(format!(
            "{} is not on a bpf filesystem; mount one (mount -t bpf bpf /sys/fs/bpf) or choose \
             a pin directory under a bpffs mount",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|source| BpfError::Io {
        path: dir.into(),
        source,
    })
}

/// BPF_OBJ_PIN: `fd` at `path` (which must not exist).
pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> Result<(), BpfError> {
    let c = c_path(path)?;
    let mut attr = Attr::new();
    // pathname @0, bpf_fd @8, file_flags @12
    attr.ptr(0, c.as_ptr()).fd(8, fd);
    // SAFETY: the only pointer in `attr` is `c`, a NUL-terminated string that
    // outlives the call.
    unsafe { sys::bpf(sys::BPF_OBJ_PIN, &mut attr) }
        .map_err(sys::map_err("BPF_OBJ_PIN", path.display().to_string()))?;
    Ok(())
}

/// BPF_OBJ_GET: the object pinned at `path`; `None` if nothing is.
pub fn get(path: &Path) -> Result<Option<OwnedFd>, BpfError> {
    let c = c_path(path)?;
    let mut attr = Attr::new();
    attr.ptr(0, c.as_ptr());
    // SAFETY: as in `pin`.
    match unsafe { sys::bpf_fd(sys::BPF_OBJ_GET, &mut attr) } {
        Ok(fd) => Ok(Some(fd)),
        Err(libc::ENOENT) => Ok(None),
        Err(e) => Err(BpfError::sys("BPF_OBJ_GET", path.display().to_string(), e)),
    }
}

/// The layout the kernel reports for a map fd.
pub fn map_layout(fd: BorrowedFd<'_>) -> Result<MapDef, BpfError> {
    let (map_type, key_size, value_size, max_entries, flags) =
        sys::map_info(fd).map_err(sys::map_err("BPF_OBJ_GET_INFO_BY_FD", "pinned map"))?;
    Ok(MapDef {
        map_type,
        key_size,
        value_size,
        max_entries,
        flags,
        pinning: crate::PIN_BY_NAME,
    })
}

/// What [`open_or_create`] did with the pinned map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinOutcome {
    /// No pin existed: a fresh map, now pinned.
    Created,
    /// The pinned map had the wanted layout and is used as it is.
    Reused,
    /// The pinned map had another layout: unpinned, a fresh one pinned.
    Replaced,
}

/// The map `name` with layout `def` under `dir`: the pinned one if its
/// layout matches, else a fresh one, pinned (replacing a mismatched pin).
pub fn open_or_create(
    dir: &Path,
    name: &str,
    def: MapDef,
) -> Result<(OwnedFd, PinOutcome), BpfError> {
    prepare_dir(dir)?;
    let path = dir.join(name);
    let mut outcome = PinOutcome::Created;
    if let Some(fd) = get(&path)? {
        let have = map_layout(fd.as_fd())?;
        let same = |a: &MapDef| (a.map_type, a.key_size, a.value_size, a.max_entries, a.flags);
        if same(&have) == same(&def) {
            return Ok((fd, PinOutcome::Reused));
        }
        std::fs::remove_file(&path).map_err(|source| BpfError::Io {
            path: path.clone(),
            source,
        })?;
        outcome = PinOutcome::Replaced;
    }
    let fd = crate::maps::create_fd(name, &def)?;
    pin(fd.as_fd(), &path)?;
    Ok((fd, outcome))
}

/// Removes every pin under `dir` and the directory itself (the maps die
/// with their last user). Fine if `dir` does not exist.
pub fn remove_dir(dir: &Path) -> Result<(), BpfError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(BpfError::Io {
            path: dir.into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// A private bpffs instance mounted on a fresh directory, for tests and
/// labs: each mount of bpffs is its own namespace of pins, so nothing pinned
/// here can collide with the node's `/sys/fs/bpf` or another test. Unmounted
/// (lazily) and removed on drop, also when a test fails.
#[derive(Debug)]
pub struct PrivateBpffs {
    dir: PathBuf,
}

impl PrivateBpffs {
    /// Mounts bpffs on `<tmp>/weft-bpffs-<tag>-<pid>-<n>`. Needs root.
    pub fn mount(tag: &str) -> Result<Self, BpfError> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weft-bpffs-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).map_err(|source| BpfError::Io {
            path: dir.clone(),
            source,
        })?;
        let target = c_path(&dir)?;
        // SAFETY: every argument is a NUL-terminated string that outlives the
        // call; data is NULL (no options).
        let rc = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                target.as_ptr(),
                c"bpf".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            let _ = std::fs::remove_dir(&dir);
            return Err(BpfError::Pin(format!(
                "mount bpffs on {}: {e}; needs root",
                dir.display()
            )));
        }
        Ok(PrivateBpffs { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PrivateBpffs {
    fn drop(&mut self) {
        if let Ok(c) = c_path(&self.dir) {
            // SAFETY: c is a NUL-terminated path that outlives the call.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}
