//! CNI errors: the well-known codes of the spec and weft's own (>= 100).

use serde::{Deserialize, Serialize};

/// Error codes. 0-99 are the spec's; 100 and up are weft's own.
pub mod codes {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const NOT_AVAILABLE_LIMITED_CONNECTIVITY: u32 = 51;
    /// The pools have no free address for this request.
    pub const IPAM_EXHAUSTED: u32 = 100;
    /// A requested static address is taken, outside every pool, or invalid.
    pub const IPAM_REQUEST_REFUSED: u32 = 101;
    /// The kernel refused a data-path change (netlink, netns, sysctl).
    pub const DATAPATH_FAILURE: u32 = 102;
    /// CHECK found the attachment differs from what weft set up.
    pub const CHECK_FAILED: u32 = 103;
    /// Anything else inside weftd.
    pub const INTERNAL: u32 = 199;
}

/// The CNI error object, printed on stdout with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("cni error {code}: {msg}")]
pub struct CniError {
    /// Filled in when printed; the version of the config (or the newest
    /// supported when the config could not be read).
    #[serde(
        rename = "cniVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            cni_version: String::new(),
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }
}
