//! Sysctls under `/proc/sys/net`.
//!
//! `/proc/sys/net` shows the network namespace of the task that opens the
//! file, so these functions must run on a thread inside the intended netns
//! (`LinuxDatapath` arranges that for the agent's netns).

use std::path::{Path, PathBuf};

use crate::error::DatapathError;

/// `net.ipv4.ip_forward`.
pub const IPV4_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
/// `net.ipv6.conf.all.forwarding`.
pub const IPV6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Writes `value` to a sysctl file unless it already holds it.
pub fn write(path: &Path, value: &str) -> Result<(), DatapathError> {
    if let Ok(cur) = std::fs::read_to_string(path) {
        if cur.trim() == value {
            return Ok(());
        }
    }
    std::fs::write(path, format!("{value}\n"))
        .map_err(|e| DatapathError::io("write sysctl", PathBuf::from(path), e))
}

/// Reads a sysctl file, trimmed.
pub fn read(path: &Path) -> Result<String, DatapathError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| DatapathError::io("read sysctl", PathBuf::from(path), e))
}

/// Enables IPv4 and IPv6 forwarding in the calling thread's netns.
pub fn enable_forwarding() -> Result<(), DatapathError> {
    write(Path::new(IPV4_FORWARD), "1")?;
    // A kernel without IPv6 has no such file; that is not an error for v4-only
    // nodes.
    if Path::new(IPV6_FORWARD).exists() {
        write(Path::new(IPV6_FORWARD), "1")?;
    }
    Ok(())
}
