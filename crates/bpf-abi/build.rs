//! Generates the Rust twins of `include/weft/*.h` into `$OUT_DIR/abi.rs`:
//! constants, `#[repr(C)]` structs (with `Pod`), the enums' values and
//! names, a counters struct per enum that ends in `_MAX`, and the layout
//! table and C probe the drift test compares. The header is the one
//! definition; this reads only the subset of C it documents and fails the
//! build on anything else, or on implicit padding, rather than guess.
//!
//! Dependents find the headers through `DEP_WEFT_BPF_ABI_INCLUDE`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

struct Field {
    name: String,
    ty: &'static str,
    size: usize,
    len: Option<usize>,
    doc: String,
}

struct Struct {
    c_name: String,
    fields: Vec<Field>,
    size: usize,
}

struct Enum {
    c_name: String,
    members: Vec<(String, i64, String)>,
}

fn camel(c_name: &str) -> String {
    c_name
        .trim_start_matches("weft_")
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// A C field name as a Rust identifier (`type` is a keyword).
fn ident(name: &str) -> String {
    match name {
        "type" | "match" | "ref" | "move" | "mod" | "impl" | "fn" | "use" | "loop" => {
            format!("r#{name}")
        }
        _ => name.to_string(),
    }
}

fn c_type(t: &str) -> Option<(&'static str, usize)> {
    Some(match t {
        "__u8" => ("u8", 1),
        "__u16" => ("u16", 2),
        "__u32" => ("u32", 4),
        "__u64" => ("u64", 8),
        "__s32" => ("i32", 4),
        "__s64" => ("i64", 8),
        _ => return None,
    })
}

/// Splits `code; /* doc */` into code and doc.
fn split_comment(line: &str) -> (&str, String) {
    match line.find("/*") {
        Some(i) => (
            line[..i].trim(),
            line[i + 2..]
                .trim_end()
                .trim_end_matches("*/")
                .trim()
                .to_string(),
        ),
        None => (line.trim(), String::new()),
    }
}

fn parse(
    path: &Path,
    consts: &mut Vec<(String, &'static str, i64)>,
    structs: &mut Vec<Struct>,
    enums: &mut Vec<Enum>,
) {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let bad = |n: usize, l: &str, why: &str| -> ! {
        panic!(
            "{}:{}: {why}: {l:?} (see the subset the header documents)",
            path.display(),
            n + 1
        )
    };
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let (code, _) = split_comment(line);
        if let Some(rest) = code.strip_prefix("#define WEFT_") {
            let mut parts = rest.splitn(2, char::is_whitespace);
            let name = parts.next().unwrap_or_default().to_string();
            let Some(value) = parts.next().map(str::trim) else {
                continue;
            }; // include guards
            let (ty, num) = match value.strip_prefix("((").and_then(|v| v.strip_suffix(')')) {
                Some(v) => {
                    let (t, num) = v
                        .split_once(')')
                        .unwrap_or_else(|| bad(n, line, "typed constant"));
                    (c_type(t).unwrap_or_else(|| bad(n, line, "type")).0, num)
                }
                None => ("u32", value),
            };
            let num: i64 = num
                .trim()
                .parse()
                .unwrap_or_else(|_| bad(n, line, "not an integer"));
            consts.push((name, ty, num));
        } else if let Some(rest) = code
            .strip_prefix("struct weft_")
            .and_then(|r| r.strip_suffix('{'))
        {
            let c_name = format!("weft_{}", rest.trim());
            let mut fields = Vec::new();
            let mut off = 0;
            let mut align = 1;
            for (n, line) in lines.by_ref() {
                let (code, doc) = split_comment(line);
                if code == "};" {
                    break;
                }
                if code.is_empty() || code.starts_with('*') || line.trim_start().starts_with("/*") {
                    continue;
                }
                let decl = code
                    .strip_suffix(';')
                    .unwrap_or_else(|| bad(n, line, "field"));
                let (t, name) = decl
                    .split_once(char::is_whitespace)
                    .unwrap_or_else(|| bad(n, line, "field"));
                let (ty, size) = c_type(t).unwrap_or_else(|| bad(n, line, "field type"));
                let name = name.trim();
                let (name, len) = match name.split_once('[') {
                    Some((f, l)) => (
                        f,
                        Some(
                            l.trim_end_matches(']')
                                .parse::<usize>()
                                .unwrap_or_else(|_| bad(n, line, "array length")),
                        ),
                    ),
                    None => (name, None),
                };
                if off % size != 0 {
                    bad(
                        n,
                        line,
                        "implicit padding before this field; add an explicit pad field",
                    );
                }
                off += size * len.unwrap_or(1);
                align = align.max(size);
                fields.push(Field {
                    name: name.to_string(),
                    ty,
                    size,
                    len,
                    doc,
                });
            }
            if off % align != 0 {
                panic!(
                    "{}: struct {c_name} has implicit tail padding; add an explicit pad field",
                    path.display()
                );
            }
            structs.push(Struct {
                c_name,
                fields,
                size: off,
            });
        } else if let Some(rest) = code
            .strip_prefix("enum weft_")
            .and_then(|r| r.strip_suffix('{'))
        {
            let c_name = format!("weft_{}", rest.trim());
            let mut members = Vec::new();
            for (n, line) in lines.by_ref() {
                let (code, doc) = split_comment(line);
                if code == "};" {
                    break;
                }
                if code.is_empty() {
                    continue;
                }
                let (name, v) = code
                    .trim_end_matches(',')
                    .split_once('=')
                    .unwrap_or_else(|| bad(n, line, "enumerator needs `= value`"));
                let name = name
                    .trim()
                    .strip_prefix("WEFT_")
                    .unwrap_or_else(|| bad(n, line, "enumerator must start WEFT_"));
                let v: i64 = v.trim().parse().unwrap_or_else(|_| bad(n, line, "value"));
                members.push((name.to_string(), v, doc));
            }
            enums.push(Enum { c_name, members });
        }
    }
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include");
    println!("cargo:rerun-if-changed=include");
    println!("cargo:include={}", dir.display());
    let mut headers: Vec<PathBuf> = std::fs::read_dir(dir.join("weft"))
        .expect("include/weft")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "h"))
        .collect();
    headers.sort();
    let (mut consts, mut structs, mut enums) = (Vec::new(), Vec::new(), Vec::new());
    for h in &headers {
        println!("cargo:rerun-if-changed={}", h.display());
        parse(h, &mut consts, &mut structs, &mut enums);
    }

    let mut rs =
        String::from("// @generated by build.rs from include/weft/*.h: edit the headers.\n\n");
    // (key, Rust expression) rows for the drift test, and the C probe
    let mut layout: Vec<(String, String)> = Vec::new();
    let mut probe = String::new();
    for (name, ty, v) in &consts {
        writeln!(rs, "/// `WEFT_{name}`.\npub const {name}: {ty} = {v};").unwrap();
        layout.push((format!("WEFT_{name}"), format!("{name} as i64")));
        writeln!(probe, "  P(\"WEFT_{name}\", (long long)WEFT_{name});").unwrap();
    }
    for s in &structs {
        let rust = camel(&s.c_name);
        // std derives Default only for arrays of up to 32 elements
        let big = s.fields.iter().any(|f| f.len.is_some_and(|n| n > 32));
        let default = if big { "" } else { ", Default" };
        writeln!(rs, "\n/// `struct {}` ({} bytes).\n#[repr(C)]\n#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord{default})]\npub struct {rust} {{", s.c_name, s.size).unwrap();
        for f in &s.fields {
            if !f.doc.is_empty() {
                writeln!(rs, "    /// {}", f.doc).unwrap();
            }
            let ty = match f.len {
                Some(n) => format!("[{}; {n}]", f.ty),
                None => f.ty.to_string(),
            };
            writeln!(rs, "    pub {}: {ty},", ident(&f.name)).unwrap();
            layout.push((
                format!("{}.{}", s.c_name, f.name),
                format!("std::mem::offset_of!({rust}, {}) as i64", ident(&f.name)),
            ));
            writeln!(
                probe,
                "  P(\"{0}.{1}\", offsetof(struct {0}, {1}));",
                s.c_name, f.name
            )
            .unwrap();
            let _ = f.size;
        }
        writeln!(rs, "}}\n// SAFETY: repr(C), integer fields only, and build.rs refused implicit padding.\nunsafe impl weft_bpf::Pod for {rust} {{}}").unwrap();
        if big {
            let zeros: Vec<String> = s
                .fields
                .iter()
                .map(|f| match f.len {
                    Some(n) => format!("{}: [0; {n}]", ident(&f.name)),
                    None => format!("{}: 0", ident(&f.name)),
                })
                .collect();
            writeln!(rs, "impl Default for {rust} {{\n    fn default() -> Self {{\n        {rust} {{ {} }}\n    }}\n}}", zeros.join(", ")).unwrap();
        }
        layout.push((
            format!("{} size", s.c_name),
            format!("std::mem::size_of::<{rust}>() as i64"),
        ));
        writeln!(probe, "  P(\"{0} size\", sizeof(struct {0}));", s.c_name).unwrap();
    }
    for e in &enums {
        let prefix = e.c_name.trim_start_matches("weft_").to_uppercase();
        let counted: Vec<&(String, i64, String)> = e
            .members
            .iter()
            .filter(|m| !m.0.ends_with("_MAX"))
            .collect();
        for (name, v, doc) in &e.members {
            let doc = if doc.is_empty() {
                format!("`WEFT_{name}`.")
            } else {
                format!("`WEFT_{name}`: {doc}.")
            };
            writeln!(rs, "/// {doc}\npub const {name}: u32 = {v};").unwrap();
            layout.push((format!("WEFT_{name}"), format!("{name} as i64")));
            writeln!(probe, "  P(\"WEFT_{name}\", (long long)WEFT_{name});").unwrap();
        }
        let Some(max) = e.members.last().filter(|m| m.0.ends_with("_MAX")) else {
            continue;
        };
        assert!(
            counted.iter().enumerate().all(|(i, m)| m.1 == i as i64)
                && max.1 == counted.len() as i64,
            "enum {}: values must run 0.. in order with _MAX last",
            e.c_name
        );
        let names: Vec<String> = counted
            .iter()
            .map(|m| m.0[prefix.len() + 1..].to_lowercase())
            .collect();
        let ty = format!("{}s", camel(&e.c_name));
        writeln!(rs, "\n/// The names of `enum {}`, index = value (what `weft status` shows).\npub const {prefix}_NAMES: [&str; {}] = {names:?};", e.c_name, names.len()).unwrap();
        writeln!(rs, "\n/// One `u64` per `enum {}` value (e.g. summed over CPUs).\n#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]\npub struct {ty} {{", e.c_name).unwrap();
        for (n, m) in names.iter().zip(&counted) {
            if !m.2.is_empty() {
                writeln!(rs, "    /// {}", m.2).unwrap();
            }
            writeln!(rs, "    pub {n}: u64,").unwrap();
        }
        writeln!(rs, "}}\n\nimpl {ty} {{\n    /// From the slots in enum order.\n    pub fn from_slots(s: [u64; {0}]) -> Self {{\n        let [{1}] = s;\n        {ty} {{ {1} }}\n    }}\n\n    /// (name, value) in enum order.\n    pub fn pairs(&self) -> [(&'static str, u64); {0}] {{\n        [{2}]\n    }}\n}}",
            names.len(),
            names.join(", "),
            names.iter().map(|n| format!("(\"{n}\", self.{n})")).collect::<Vec<_>>().join(", ")
        ).unwrap();
    }
    writeln!(rs, "\n/// Every generated size, offset and constant, for the drift test.\npub const LAYOUT: &[(&str, i64)] = &[").unwrap();
    for (k, v) in &layout {
        writeln!(rs, "    ({k:?}, {v}),").unwrap();
    }
    writeln!(rs, "];").unwrap();
    let includes: String = headers
        .iter()
        .map(|h| {
            format!(
                "#include \"weft/{}\"\n",
                h.file_name().unwrap().to_string_lossy()
            )
        })
        .collect();
    let probe_c = format!("#include <stdio.h>\n#include <stddef.h>\n{includes}#define P(k, v) printf(\"%s %lld\\n\", k, (long long)(v))\nint main(void) {{\n{probe}  return 0;\n}}\n");
    writeln!(rs, "\n/// A C program printing what C says of every row of [`LAYOUT`].\npub const PROBE_C: &str = {probe_c:?};").unwrap();
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("abi.rs");
    std::fs::write(&out, rs).expect("write abi.rs");
}
