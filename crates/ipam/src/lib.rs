//! Block-based IPAM over the weft Store trait.
