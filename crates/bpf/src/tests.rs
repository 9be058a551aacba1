//! Parser tests against objects clang really produces (no root needed).

use std::path::Path;

use super::*;

#[path = "../tests/common/clang.rs"]
mod clang;
use clang::{compile_bpf, compile_bpf_code, FIXTURE};

/// Compiles C source for BPF: a file, or `code` when `file` is None.
fn compile(file: Option<&Path>, code: &str) -> Vec<u8> {
    match file {
        Some(f) => compile_bpf(f),
        None => compile_bpf_code(code),
    }
}

fn fixture() -> Vec<u8> {
    compile(Some(Path::new(FIXTURE)), "")
}

/// A minimal program in the object conventions around `body`.
fn program(decls: &str, body: &str) -> Vec<u8> {
    compile(
        None,
        &format!(
            r#"#include <linux/bpf.h>
#define SEC(n) __attribute__((section(n), used))
struct weft_map_def {{ __u32 type, key_size, value_size, max_entries, map_flags; }};
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
{decls}
SEC("tc/t") int weft_t(struct __sk_buff *skb) {{ {body} }}
char _license[] SEC("license") = "GPL";
"#
        ),
    )
}

#[test]
fn parses_maps_programs_and_license() {
    let obj = parse_object(&fixture()).unwrap();
    let maps: Vec<(&str, MapDef)> = obj.map_defs().map(|(n, d)| (n, *d)).collect();
    let def = |map_type, key_size, value_size, max_entries| MapDef {
        map_type,
        key_size,
        value_size,
        max_entries,
        flags: 0,
        pinning: PIN_NONE,
    };
    assert_eq!(
        maps,
        [
            ("weft_test_counts", def(2, 4, 8, 4)),
            ("weft_test_percpu", def(6, 4, 8, 1)),
            ("weft_test_hash", def(1, 4, 12, 16)),
        ]
    );
    assert_eq!(
        obj.program_names().collect::<Vec<_>>(),
        ["weft_test_ct", "weft_test_pass"]
    );
    assert_eq!(obj.programs()[0].section, "tc/test_ct");
    assert_eq!(obj.license(), "GPL");
}

#[test]
fn classifies_relocations() {
    let obj = parse_object(&fixture()).unwrap();
    let ct = &obj.programs()[0];
    let kfuncs: Vec<&str> = ct
        .relocs
        .iter()
        .filter_map(|r| match &r.kind {
            RelocKind::Kfunc(n) => Some(n.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(kfuncs, ["bpf_skb_ct_lookup", "bpf_ct_release"]);
    let mut maps: Vec<&str> = ct
        .relocs
        .iter()
        .filter_map(|r| match &r.kind {
            RelocKind::Map(n) => Some(n.as_str()),
            _ => None,
        })
        .collect();
    maps.dedup();
    assert_eq!(maps, ["weft_test_percpu", "weft_test_counts"]);
    for r in &ct.relocs {
        let op = ct.insns[r.insn][0];
        match r.kind {
            RelocKind::Map(_) => assert_eq!(op, 0x18, "ld_imm64 at {}", r.insn),
            RelocKind::Kfunc(_) => assert_eq!(op, 0x85, "call at {}", r.insn),
        }
    }
    // the second section has its own relocations
    let pass = &obj.programs()[1];
    assert_eq!(pass.relocs.len(), 1);
    assert_eq!(
        pass.relocs[0].kind,
        RelocKind::Map("weft_test_counts".into())
    );
}

#[test]
fn patches_instructions() {
    // r1 = 0 ll with dst_reg 1
    let mut ld = [0x18, 0x01, 0, 0, 0, 0, 0, 0];
    object::patch_map_fd(&mut ld, 7);
    assert_eq!(ld, [0x18, 0x11, 0, 0, 7, 0, 0, 0]);
    // call -1 with src_reg 1 as clang writes an extern call
    let mut call = [0x85, 0x10, 0, 0, 0xff, 0xff, 0xff, 0xff];
    object::patch_kfunc(&mut call, 0x0102_0304);
    assert_eq!(call, [0x85, 0x20, 0, 0, 4, 3, 2, 1]);
}

#[test]
fn rejects_global_variables() {
    let elf = program("int weft_counter;", "weft_counter++; return -1;");
    let e = parse_object(&elf).unwrap_err();
    assert!(matches!(e, BpfError::Unsupported(_)), "{e}");
    assert!(
        e.to_string()
            .contains("global variables are not supported; use a map"),
        "{e}"
    );
    // read-only data too
    let elf = program("const volatile int weft_knob = 3;", "return weft_knob;");
    let e = parse_object(&elf).unwrap_err().to_string();
    assert!(e.contains("global variables are not supported"), "{e}");
}

#[test]
fn rejects_bpf_to_bpf_calls() {
    let elf = program(
        "static __attribute__((noinline)) int helper(int x) { return x * 3 - 1; }",
        "return helper(skb->len);",
    );
    let e = parse_object(&elf).unwrap_err().to_string();
    assert!(e.contains("BPF-to-BPF calls are not supported"), "{e}");
}

#[test]
fn accepts_a_program_without_maps_or_kfuncs() {
    let obj = parse_object(&program("", "return -1;")).unwrap();
    assert_eq!(obj.program_names().collect::<Vec<_>>(), ["weft_t"]);
    assert_eq!(obj.map_defs().count(), 0);
    assert!(obj.programs()[0].relocs.is_empty());
}

#[test]
fn static_maps_resolve_by_offset() {
    // a static map is referenced through the section symbol plus an addend
    let elf = program(
        "static struct weft_map_def SEC(\"maps\") a = { 2, 4, 8, 1, 0 };\n\
         static struct weft_map_def SEC(\"maps\") b = { 2, 4, 4, 1, 0 };",
        "__u32 k = 0; void *p = bpf_map_lookup_elem(&b, &k); void *q = bpf_map_lookup_elem(&a, &k); \
         return p && q ? 0 : -1;",
    );
    let obj = parse_object(&elf).unwrap();
    let kinds: Vec<_> = obj.programs()[0]
        .relocs
        .iter()
        .map(|r| r.kind.clone())
        .collect();
    assert_eq!(
        kinds,
        [RelocKind::Map("b".into()), RelocKind::Map("a".into())]
    );
}

#[test]
fn rejects_a_missing_license() {
    let elf = compile(
        None,
        "#include <linux/bpf.h>\n\
         __attribute__((section(\"tc/t\"), used)) int weft_t(struct __sk_buff *skb) { return -1; }\n",
    );
    let e = parse_object(&elf).unwrap_err().to_string();
    assert!(e.contains("no license section"), "{e}");
}

#[test]
fn malformed_input_errors_without_panicking() {
    let good = fixture();
    assert!(parse_object(&[]).is_err());
    assert!(parse_object(b"definitely not an ELF file, just some bytes").is_err());
    // every truncation
    for len in (0..good.len()).step_by(13) {
        assert!(
            parse_object(&good[..len]).is_err(),
            "truncated to {len} parsed"
        );
    }
    // wrong machine: x86-64
    let mut x86 = good.clone();
    x86[18..20].copy_from_slice(&62u16.to_le_bytes());
    let e = parse_object(&x86).unwrap_err().to_string();
    assert!(e.contains("EM_BPF"), "{e}");
    // big-endian and 32-bit
    let mut be = good.clone();
    be[5] = 2;
    assert!(parse_object(&be).is_err());
    // random corruption: a deterministic xorshift flips bytes; errors are
    // fine, panics are not
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..3000 {
        let mut bad = good.clone();
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state % bad.len() as u64) as usize;
            bad[i] ^= (state >> 32) as u8 | 1;
        }
        let _ = parse_object(&bad);
    }
    // pure garbage of ELF shape
    let mut junk = good.clone();
    for (i, b) in junk.iter_mut().enumerate().skip(64) {
        *b = (i as u8).wrapping_mul(31);
    }
    let _ = parse_object(&junk);
}

#[test]
fn log_tail_keeps_the_last_lines() {
    let mut buf: Vec<u8> = (0..100)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    buf.extend_from_slice(&[0; 16]);
    let tail = log_tail(&buf);
    assert_eq!(tail.lines().count(), LOG_LINES);
    assert!(
        tail.starts_with("line 60\n") && tail.ends_with("line 99"),
        "{tail}"
    );
    assert_eq!(log_tail(&[0; 8]), "");
}
