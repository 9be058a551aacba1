//! The one error type of the kernel seam.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong between weft and the kernel.
///
/// Every variant names the operation and the object it was applied to, so a
/// message in a CNI error or a log line says what failed where.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The pod's network namespace path does not exist (the sandbox is gone).
    #[error("network namespace {} does not exist", path.display())]
    NetnsGone { path: PathBuf },

    /// The pod's "network namespace" path is something else.
    #[error("{} is {what}, not a network namespace", path.display())]
    NotNetns { path: PathBuf, what: String },

    /// The pod's network namespace is the node's or the host's own.
    #[error("network namespace {} is {whose}; weft never plumbs a pod there", path.display())]
    NodeNetns { path: PathBuf, whose: &'static str },

    /// The pod netns already holds an interface with the requested name.
    #[error("interface {ifname} already exists in {}", netns.display())]
    InterfaceExists { ifname: String, netns: PathBuf },

    /// A link that must exist (for example the host side of a pod) is missing.
    #[error("link {name} not found")]
    LinkNotFound { name: String },

    /// An interface name the kernel would reject.
    #[error("invalid interface name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },

    /// A netlink request the kernel answered with an error.
    #[error("netlink {op} {object}: {}", errno_text(*.errno, .detail.as_deref()))]
    Netlink {
        /// The request type, e.g. `RTM_NEWLINK`.
        op: &'static str,
        /// What the request was about, e.g. `veth weft1a2b3c4d5e6`.
        object: String,
        /// The positive errno.
        errno: i32,
        /// The kernel's extended-ack message, when it sent one.
        detail: Option<String>,
    },

    /// A file or namespace operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A system call that is not about a file failed (socket, setns, ...).
    #[error("{call} {object}: {source}")]
    Syscall {
        call: &'static str,
        object: String,
        #[source]
        source: io::Error,
    },

    /// An external command (only `nft`, once at start-up) failed.
    #[error("command {cmd} failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },

    /// The kernel sent something this crate does not understand.
    #[error("netlink protocol error in {op}: {what}")]
    Protocol { op: &'static str, what: String },

    /// Neither an IPv4 nor an IPv6 default route exists to find the underlay.
    #[error("no default route (ipv4 or ipv6) to detect the underlay interface; set the underlay interface or the mtu explicitly")]
    NoDefaultRoute,

    /// A peer node that `sync_peers` cannot route to (nothing was changed).
    #[error("cannot route to node {peer}: {reason}")]
    InvalidPeer { peer: String, reason: String },

    /// Loading, attaching or updating the eBPF fast path failed.
    #[error("ebpf fast path: {0}")]
    Bpf(#[from] weft_bpf::BpfError),

    /// A failure injected by [`crate::RecordingDatapath`] (tests only).
    #[error("{0}")]
    Injected(String),
}

use weft_netlink::{errno_text, NetlinkError};

/// The rtnetlink client's errors keep their place among the data path's
/// variants, so callers matching `DatapathError::Netlink` see no change.
impl From<NetlinkError> for DatapathError {
    fn from(e: NetlinkError) -> Self {
        match e {
            NetlinkError::Kernel {
                op,
                object,
                errno,
                detail,
            } => DatapathError::Netlink {
                op,
                object,
                errno,
                detail,
            },
            NetlinkError::Syscall {
                call,
                object,
                source,
            } => DatapathError::Syscall {
                call,
                object,
                source,
            },
            NetlinkError::Protocol { op, what } => DatapathError::Protocol { op, what },
        }
    }
}

impl DatapathError {
    /// The errno behind this error, when it came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        match self {
            DatapathError::Netlink { errno, .. } => Some(*errno),
            DatapathError::Io { source, .. } | DatapathError::Syscall { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        DatapathError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn syscall(
        call: &'static str,
        object: impl Into<String>,
        source: io::Error,
    ) -> Self {
        DatapathError::Syscall {
            call,
            object: object.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_error_names_op_and_object() {
        let e = DatapathError::Netlink {
            op: "RTM_NEWLINK",
            object: "veth weft1a2b3c4d5e6".into(),
            errno: libc::EEXIST,
            detail: None,
        };
        assert_eq!(
            e.to_string(),
            "netlink RTM_NEWLINK veth weft1a2b3c4d5e6: File exists (os error 17)"
        );
        assert_eq!(e.errno(), Some(17));
    }

    #[test]
    fn netns_gone_message() {
        let e = DatapathError::NetnsGone {
            path: "/run/netns/x".into(),
        };
        assert_eq!(
            e.to_string(),
            "network namespace /run/netns/x does not exist"
        );
    }
}
