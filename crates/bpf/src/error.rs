//! The error type of the eBPF loader. Messages say what failed and, where the
//! cause is usually the environment (privileges, kernel version), what to do.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong loading, attaching or using eBPF objects.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// The object file is not a well-formed 64-bit little-endian BPF ELF.
    #[error("malformed BPF object: {0}")]
    Elf(String),

    /// The object is valid ELF but uses a feature this loader does not
    /// implement (the message says how to write the C side instead).
    #[error("unsupported BPF object: {0}")]
    Unsupported(String),

    /// The kernel BTF blob could not be parsed.
    #[error("malformed BTF: {0}")]
    Btf(String),

    /// A kfunc the program calls is not in the kernel's BTF.
    #[error(
        "kernel function {name} is not in the kernel BTF: the kernel is too old or built \
         without it, or it lives in a module (weft resolves kfuncs against vmlinux only)"
    )]
    KfuncNotFound { name: String },

    /// A bpf(2) command failed.
    #[error("{op} {object}: {}", hint(op, *errno))]
    Syscall {
        /// The command, e.g. `BPF_MAP_CREATE`.
        op: &'static str,
        /// What it was applied to, e.g. `map weft_counts`.
        object: String,
        /// The positive errno.
        errno: i32,
    },

    /// The verifier rejected a program; `log` holds the end of its log.
    #[error(
        "the verifier rejected program {program} ({}); the end of its log:\n{log}",
        io::Error::from_raw_os_error(*errno)
    )]
    Verifier {
        program: String,
        errno: i32,
        log: String,
    },

    /// A key or value of the wrong size for the map.
    #[error("map {map}: {what} is {got} bytes, the map's {what} size is {expected}")]
    Size {
        map: String,
        what: &'static str,
        expected: usize,
        got: usize,
    },

    /// `lookup` on a per-CPU map or `lookup_percpu` on a shared one.
    #[error("map {map}: {reason}")]
    MapKind { map: String, reason: &'static str },

    /// No map or program of that name in the loaded object.
    #[error("no {kind} named {name} in the loaded BPF object")]
    NotFound { kind: &'static str, name: String },

    /// A pin directory that cannot be used (not on bpffs, bad path).
    #[error("bpf pin: {0}")]
    Pin(String),

    /// Reading a kernel file (BTF, the possible-CPU list) failed.
    #[error("read {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl BpfError {
    pub(super) fn sys(op: &'static str, object: impl Into<String>, errno: i32) -> Self {
        BpfError::Syscall {
            op,
            object: object.into(),
            errno,
        }
    }

    /// The errno of a failed syscall, if this error is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            BpfError::Syscall { errno, .. } | BpfError::Verifier { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// The errno's text plus, for the errnos that usually mean "wrong
/// environment", what to do about it.
fn hint(op: &str, errno: i32) -> String {
    let text = io::Error::from_raw_os_error(errno);
    let advice = match errno {
        libc::EPERM | libc::EACCES => "; needs root (CAP_BPF and CAP_NET_ADMIN)",
        libc::ENOSYS => "; the kernel has no bpf() syscall (CONFIG_BPF_SYSCALL)",
        // attach types 46/47 are unknown to kernels before tcx
        libc::EINVAL if op.starts_with("BPF_PROG_ATTACH") || op.starts_with("BPF_PROG_QUERY") => {
            "; tcx needs Linux >= 6.6"
        }
        libc::ENODEV => "; no interface with that ifindex in this network namespace",
        _ => "",
    };
    format!("{text}{advice}")
}
