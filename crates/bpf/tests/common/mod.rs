//! Helpers shared by the loader's test binaries.

// each test binary uses part of it
#[allow(dead_code)]
pub mod clang;
