//! The CNI specification (containernetworking/cni SPEC.md, 1.1.0 and the
//! older versions weft still answers), as pure types: no I/O, no kernel.
//!
//! * [`version`]: supported versions, verbs per version, the VERSION reply;
//! * [`env`]: the `CNI_*` environment;
//! * [`config`]: the network config on stdin;
//! * [`result`]: the version-neutral result and a parser for any version's;
//! * [`render`]: a neutral result as a given version's JSON, merged with
//!   `prevResult` when chained;
//! * [`error`]: the CNI error object and codes.

pub mod config;
pub mod env;
pub mod error;
pub mod ifname;
pub mod render;
pub mod result;
pub mod version;

pub use config::{IpFamilies, LogLevel, NetConf, ValidAttachment, MAX_CONFIG_BYTES, PLUGIN_TYPE};
pub use env::{CniArgs, CniEnv, Command};
pub use error::{codes, CniError};
pub use render::{render_add, render_merged, render_result};
pub use result::{parse_result, Interface, IpConfig, NeutralResult, Route};
pub use version::{version_reply, CniVersion, VersionReply, SUPPORTED_VERSIONS};
