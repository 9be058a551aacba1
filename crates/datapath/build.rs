//! Compiles every entry file `bpf/<name>.bpf.c` (one per attach point) with
//! clang into `$OUT_DIR/<name>.o`, where `fastpath` embeds them. Features
//! are header libraries under `bpf/lib/`; the layouts shared with Rust come
//! from `weft-bpf-abi`'s `include/` (`DEP_WEFT_BPF_ABI_INCLUDE`). clang (and
//! libbpf-dev's headers) come from `scripts/setup.sh`; `WEFT_CLANG` names
//! another clang.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = std::env::var("WEFT_CLANG").unwrap_or_else(|_| "clang".into());
    let abi =
        std::env::var("DEP_WEFT_BPF_ABI_INCLUDE").expect("weft-bpf-abi exports its include dir");
    println!("cargo:rerun-if-env-changed=WEFT_CLANG");
    println!("cargo:rerun-if-changed=bpf");
    let mut entries: Vec<PathBuf> = std::fs::read_dir("bpf")
        .expect("bpf/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    entries.sort();
    for src in &entries {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".bpf.c"))
            .expect("utf-8 name");
        let obj = out.join(format!("{name}.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-target", "bpf", "-Wall", "-Werror"])
            // the asm/ headers of the build machine's architecture
            .arg(format!("-I/usr/include/{}-linux-gnu", arch()))
            .args(["-I", "bpf", "-I", &abi, "-c"])
            .arg(src)
            .arg("-o")
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
            "{clang} failed on {} ({status}); it needs libbpf-dev's headers (scripts/setup.sh)",
            src.display()
        );
    }
}

fn arch() -> String {
    std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into())
}
