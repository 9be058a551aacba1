//! Compiling C test programs for BPF with clang, shared by the loader's unit
//! tests (`src/bpf/tests.rs` includes this file) and the privileged test
//! binaries. Fails, never skips, without clang: CI must run these tests.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The test program: tc sections, maps of three kinds, both conntrack kfuncs.
pub const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../bpf/tests/fixtures/bpf_ct_count.c"
);

/// A temp path unique per call (tests compile in parallel).
fn scratch(ext: &str) -> std::path::PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "weft-bpf-test-{}-{}.{ext}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Compiles the C file `src` for BPF and returns the object's bytes.
pub fn compile_bpf(src: &Path) -> Vec<u8> {
    let obj = scratch("o");
    let out = Command::new("clang")
        .args(["-O2", "-g", "-target", "bpf"])
        .arg(format!(
            "-I/usr/include/{}-linux-gnu",
            std::env::consts::ARCH
        ))
        .arg("-c")
        .arg(src)
        .arg("-o")
        .arg(&obj)
        .output()
        .unwrap_or_else(|e| panic!("cannot run clang ({e}): install it, scripts/setup.sh does"));
    assert!(
        out.status.success(),
        "clang failed on {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&obj).unwrap();
    let _ = std::fs::remove_file(&obj);
    bytes
}

/// Compiles C source given as text.
pub fn compile_bpf_code(code: &str) -> Vec<u8> {
    let src = scratch("c");
    std::fs::write(&src, code).unwrap();
    let obj = compile_bpf(&src);
    let _ = std::fs::remove_file(&src);
    obj
}
