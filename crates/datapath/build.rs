//! Compiles the eBPF programs in `bpf/` with clang into `$OUT_DIR`, where
//! `fastpath` embeds them. clang (and libbpf-dev's headers) come from
//! `scripts/setup.sh`; `WEFT_CLANG` names another clang.

use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: &[&str] = &["weft_fwd"];

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = std::env::var("WEFT_CLANG").unwrap_or_else(|_| "clang".into());
    println!("cargo:rerun-if-env-changed=WEFT_CLANG");
    println!("cargo:rerun-if-changed=bpf");
    for name in PROGRAMS {
        let src = format!("bpf/{name}.bpf.c");
        let obj = out.join(format!("{name}.o"));
        println!("cargo:rerun-if-changed={src}");
        let status = Command::new(&clang)
            .args(["-O2", "-target", "bpf", "-Wall", "-Werror"])
            // the asm/ headers of the build machine's architecture
            .arg(format!("-I/usr/include/{}-linux-gnu", arch()))
            .args(["-c", &src, "-o"])
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {clang} to build the eBPF programs ({e}); \
                     install clang and libbpf-dev (scripts/setup.sh does) or set WEFT_CLANG"
                )
            });
        assert!(
            status.success(),
            "{clang} failed on {src} ({status}); it needs libbpf-dev's headers (scripts/setup.sh)"
        );
    }
}

fn arch() -> String {
    std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into())
}
