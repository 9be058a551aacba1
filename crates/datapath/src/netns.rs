//! Network namespaces: open them, run code or commands inside them.
//!
//! The network namespace is a per-thread attribute. Nothing here leaves a
//! caller's thread in another namespace: [`run_in`] uses a short-lived helper
//! thread, and the crate-internal [`with_netns`] switches the current thread
//! only around a closure and restores it through a drop guard (aborting the
//! process if the kernel refuses to switch back, rather than going on in the
//! wrong namespace).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Child, Command};

use crate::error::DatapathError;

/// The calling thread's own network namespace.
pub const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// `NSFS_MAGIC` from linux/magic.h: the filesystem of namespace files.
const NSFS_MAGIC: u64 = 0x6e73_6673;

/// Opens a netns file (`/run/netns/x`, `/proc/<pid>/ns/net`). A missing path,
/// or an empty plain file (the mount point left behind when a runtime
/// unmounted the netns but did not remove it), is
/// [`DatapathError::NetnsGone`]; anything else that is not a network
/// namespace (`/dev/zero`, a directory, `/proc/self/ns/mnt`) is
/// [`DatapathError::NotNetns`] saying what it is.
pub fn open(path: &Path) -> Result<OwnedFd, DatapathError> {
    let gone = || DatapathError::NetnsGone {
        path: path.to_path_buf(),
    };
    let not_netns = |what: String| DatapathError::NotNetns {
        path: path.to_path_buf(),
        what,
    };
    // looked at before opening: opening a fifo would block, a device may act
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(gone()),
        Err(e) => return Err(DatapathError::io("stat netns", path, e)),
    };
    if let Some(kind) = not_a_file(&meta.file_type()) {
        return Err(not_netns(kind.to_string()));
    }
    let fd: OwnedFd = match File::open(path) {
        Ok(f) => f.into(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(gone()),
        Err(e) => return Err(DatapathError::io("open netns", path, e)),
    };
    // SAFETY: an all-zero statfs is a valid out-buffer for fstatfs.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fd is a valid open descriptor; st is a live, writable statfs.
    let rc = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) };
    if rc < 0 {
        return Err(DatapathError::io(
            "statfs netns",
            path,
            io::Error::last_os_error(),
        ));
    }
    #[allow(clippy::unnecessary_cast, reason = "f_type's type differs by arch")]
    if st.f_type as u64 != NSFS_MAGIC {
        return Err(if meta.len() == 0 {
            gone()
        } else {
            not_netns("a regular file".into())
        });
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd.
    let nstype = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) };
    if nstype >= 0 && nstype != libc::CLONE_NEWNET {
        return Err(not_netns(format!("a {} namespace", ns_type_name(nstype))));
    }
    Ok(fd)
}

/// `NS_GET_NSTYPE` from linux/nsfs.h: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// What a file type is when it cannot be a namespace file (those are
/// regular files of nsfs); `None` for a regular file.
fn not_a_file(t: &std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a fifo")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        None
    }
}

fn ns_type_name(nstype: i32) -> &'static str {
    match nstype {
        libc::CLONE_NEWNS => "mount",
        libc::CLONE_NEWUTS => "uts",
        libc::CLONE_NEWIPC => "ipc",
        libc::CLONE_NEWUSER => "user",
        libc::CLONE_NEWPID => "pid",
        libc::CLONE_NEWCGROUP => "cgroup",
        libc::CLONE_NEWTIME => "time",
        _ => "non-network",
    }
}

/// The netns of pid 1: the host's (weftd itself may run in another one).
pub const HOST_NETNS: &str = "/proc/1/ns/net";

/// Opens the netns at `path` for a pod, refusing the namespace weftd runs in
/// (`node`, the identity of the node netns) and the host's ([`HOST_NETNS`]):
/// plumbing a pod there would replace the node's own default routes. The
/// comparison is by namespace identity (device and inode of the opened
/// file), so no other path to the same namespace gets past it.
pub fn open_pod(path: &Path, node: (u64, u64)) -> Result<OwnedFd, DatapathError> {
    let fd = open(path)?;
    let id = identity(fd.as_fd()).map_err(|e| DatapathError::io("fstat netns", path, e))?;
    let refuse = |whose: &'static str| DatapathError::NodeNetns {
        path: path.to_path_buf(),
        whose,
    };
    if id == node {
        return Err(refuse("the node's own (the one weftd runs in)"));
    }
    // unreadable /proc/1 (a restricted procfs): weftd's own check stands alone
    if let Ok(host) = File::open(HOST_NETNS).and_then(|f| identity(f.as_fd())) {
        if id == host {
            return Err(refuse("the host's (pid 1's)"));
        }
    }
    Ok(fd)
}

/// The identity (device, inode) of the namespace behind an fd.
pub fn identity(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    // SAFETY: an all-zero stat is a valid out-buffer for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is a valid open descriptor; st is a live, writable stat.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.st_dev, st.st_ino))
}

/// The identity of the calling thread's current netns.
pub(crate) fn current_identity() -> io::Result<(u64, u64)> {
    let f = File::open(THREAD_NETNS)?;
    identity(f.as_fd())
}

fn setns(fd: RawFd) -> io::Result<()> {
    // SAFETY: setns(2) only reads the fd; an invalid fd is reported as EBADF.
    // It changes the calling thread's netns, which every caller restores.
    let rc = unsafe { libc::setns(fd, libc::CLONE_NEWNET) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

struct Restore {
    orig: OwnedFd,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = setns(self.orig.as_raw_fd()) {
            // Going on would run the rest of this thread's work in the pod's
            // namespace; nothing safe is left to do.
            eprintln!("weft-datapath: cannot return to the original network namespace: {e}");
            std::process::abort();
        }
    }
}

/// Runs `f` on the current thread while it is in the netns behind `target`,
/// then switches back (also when `f` panics). Keep `f` small: opening a
/// socket, writing a file.
pub(crate) fn with_netns<T>(
    target: BorrowedFd<'_>,
    what: &Path,
    f: impl FnOnce() -> T,
) -> Result<T, DatapathError> {
    let orig: OwnedFd = File::open(THREAD_NETNS)
        .map_err(|e| DatapathError::io("open netns", THREAD_NETNS, e))?
        .into();
    setns(target.as_raw_fd()).map_err(|e| DatapathError::io("setns", what, e))?;
    let _restore = Restore { orig };
    Ok(f())
}

/// Runs `f` on a short-lived thread that has entered the netns at `netns`;
/// the caller's thread never changes namespace.
pub fn run_in<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> Result<T, DatapathError> {
    let fd = open(netns)?;
    run_in_fd(fd.as_fd(), netns, f)
}

/// [`run_in`] with an already open netns fd.
pub(crate) fn run_in_fd<T: Send>(
    fd: BorrowedFd<'_>,
    what: &Path,
    f: impl FnOnce() -> T + Send,
) -> Result<T, DatapathError> {
    let raw = fd.as_raw_fd();
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("weft-netns".into())
            .spawn_scoped(s, move || {
                setns(raw)?;
                Ok::<T, io::Error>(f())
            })
            .map_err(|e| DatapathError::syscall("spawn thread", what.display().to_string(), e))?;
        match h.join() {
            Ok(r) => r.map_err(|e| DatapathError::io("setns", what, e)),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Spawns `cmd` inside the netns at `netns`, from a short-lived thread that
/// entered it (the child inherits that thread's netns); the caller's threads
/// are untouched.
///
/// Why a thread rather than `setns` between fork and exec: a `pre_exec`
/// closure forces std to `fork()` the whole calling process, copying its page
/// tables (charged to the caller) and tearing the copy down again at `exec`
/// (charged to the child). For a large, many-threaded caller that is
/// milliseconds per spawn: `weft bench ipam`'s 160 workers billed ~1 ms more
/// to every weft-cni exec than the shim itself costs, and as much again to
/// the bench. Without the closure std uses `posix_spawn` (glibc's
/// `clone(CLONE_VM|CLONE_VFORK)`), which copies nothing, as a container
/// runtime does (Go's `os/exec`). A `cmd` with its own `pre_exec` still
/// forks, from the thread in the netns, and is just as correct.
pub fn spawn_in(cmd: &mut Command, netns: &Path) -> io::Result<Child> {
    let f = File::open(netns)?;
    spawn_in_fd(cmd, f.as_fd())
}

/// [`spawn_in`] with an already open netns fd (kept open by the caller until
/// this returns).
pub(crate) fn spawn_in_fd(cmd: &mut Command, fd: BorrowedFd<'_>) -> io::Result<Child> {
    let raw = fd.as_raw_fd();
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("weft-spawn".into())
            .spawn_scoped(s, move || {
                setns(raw)?;
                cmd.spawn()
            })?;
        match h.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_netns_is_gone() {
        let e = open(Path::new("/run/netns/weft-does-not-exist-xyz")).unwrap_err();
        assert!(matches!(e, DatapathError::NetnsGone { .. }), "{e}");
        let e = run_in(Path::new("/nonexistent/ns"), || 1).unwrap_err();
        assert!(matches!(e, DatapathError::NetnsGone { .. }), "{e}");
        // a plain file (an unmounted netns mount point) is gone too
        let e = open(Path::new("/proc/self/cmdline")).unwrap_err();
        assert!(matches!(e, DatapathError::NetnsGone { .. }), "{e}");
    }

    #[test]
    fn what_is_not_a_netns_is_named() {
        for (path, what) in [
            ("/dev/zero", "a character device"),
            ("/proc", "a directory"),
            ("/proc/self/ns/mnt", "a mount namespace"),
            ("/proc/self/ns/uts", "a uts namespace"),
        ] {
            match open(Path::new(path)) {
                Err(DatapathError::NotNetns { what: w, .. }) => assert_eq!(w, what, "{path}"),
                other => panic!("{path}: {other:?}"),
            }
        }
        let e = open(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(
            e.contains("/dev/zero is a character device, not a network namespace"),
            "{e}"
        );
    }

    #[test]
    fn the_node_and_host_netns_are_refused_by_identity_not_path() {
        let node = current_identity().unwrap();
        // every path to the namespace this thread is in
        for path in [
            THREAD_NETNS,
            "/proc/self/ns/net",
            "/proc/thread-self/ns/net",
        ] {
            match open_pod(Path::new(path), node) {
                Err(DatapathError::NodeNetns { whose, .. }) => {
                    assert!(whose.contains("node"), "{path}")
                }
                other => panic!("{path}: {other:?}"),
            }
        }
        // pid 1's, when weftd runs elsewhere (node identity made up here)
        if File::open(HOST_NETNS).is_ok() {
            match open_pod(Path::new(HOST_NETNS), (0, 0)) {
                Err(DatapathError::NodeNetns { whose, .. }) => {
                    assert!(whose.contains("host"), "{whose}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn own_netns_opens() {
        let fd = open(Path::new(THREAD_NETNS)).unwrap();
        assert_eq!(identity(fd.as_fd()).unwrap(), current_identity().unwrap());
    }
}
