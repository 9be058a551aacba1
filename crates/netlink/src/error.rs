//! The error type of the rtnetlink client.

use std::io;

/// What can go wrong talking rtnetlink. Every variant names the request and
/// the object it was about, so a log line says what failed where.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel answered a request with an error.
    #[error("netlink {op} {object}: {}", errno_text(*.errno, .detail.as_deref()))]
    Kernel {
        /// The request type, e.g. `RTM_NEWLINK`.
        op: &'static str,
        /// What the request was about, e.g. `veth weft1a2b3c4d5e6`.
        object: String,
        /// The positive errno.
        errno: i32,
        /// The kernel's extended-ack message, when it sent one.
        detail: Option<String>,
    },

    /// A socket call failed (socket, bind, setsockopt, send, recv).
    #[error("{call} {object}: {source}")]
    Syscall {
        call: &'static str,
        object: String,
        #[source]
        source: io::Error,
    },

    /// The kernel sent something this crate does not understand, or not at all.
    #[error("netlink protocol error in {op}: {what}")]
    Protocol { op: &'static str, what: String },
}

/// The errno's text and the kernel's extended-ack message, lowercased.
pub fn errno_text(errno: i32, detail: Option<&str>) -> String {
    let base = io::Error::from_raw_os_error(errno).to_string();
    match detail {
        Some(d) if !d.is_empty() => format!("{base}: {}", d.to_lowercase()),
        _ => base,
    }
}

impl NetlinkError {
    /// The errno behind this error, when it came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { errno, .. } => Some(*errno),
            NetlinkError::Syscall { source, .. } => source.raw_os_error(),
            NetlinkError::Protocol { .. } => None,
        }
    }

    pub(crate) fn syscall(
        call: &'static str,
        object: impl Into<String>,
        source: io::Error,
    ) -> Self {
        NetlinkError::Syscall {
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
    fn kernel_error_names_op_and_object() {
        let e = NetlinkError::Kernel {
            op: "RTM_NEWLINK",
            object: "veth weft1a2b3c4d5e6".into(),
            errno: libc::EEXIST,
            detail: Some("Link Exists".into()),
        };
        assert_eq!(
            e.to_string(),
            "netlink RTM_NEWLINK veth weft1a2b3c4d5e6: File exists (os error 17): link exists"
        );
        assert_eq!(e.errno(), Some(17));
    }
}
