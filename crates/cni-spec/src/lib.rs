//! The CNI specification (containernetworking/cni SPEC.md, 1.1.0 and the
//! older versions weft still answers), as pure types: no I/O, no kernel.

pub mod error;
pub mod result;

pub use error::{codes, CniError};
pub use result::{Interface, IpConfig, NeutralResult, Route};
