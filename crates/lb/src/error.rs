//! [`LbError`]: what can go wrong building the load-balancing state.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LbError {
    #[error("maglev table size {m} is not a prime of at least 3: configure a prime such as 251, 1021, 16381 or 65521")]
    MaglevSize { m: u32 },
    #[error("maglev table of {m} slots cannot hold {backends} backends: configure a larger prime (100 times the backends of the largest service)")]
    MaglevTooManyBackends { m: u32, backends: usize },
    #[error("backend {id} is given twice to one maglev table: deduplicate backends by address, port and protocol first")]
    MaglevDuplicate { id: u32 },
    #[error("{frontend} has {backends} backends, more than a service entry's 16-bit count holds: split the Service")]
    TooManyBackends { frontend: String, backends: usize },
    #[error("all {max} service IDs are in use: remove unused Services or raise the limit")]
    ServiceIdsExhausted { max: u32 },
    #[error("all {max} backend IDs are in use: remove unused endpoints or raise the limit")]
    BackendIdsExhausted { max: u32 },
}
