//! Finds a function's type id in raw BTF (e.g. `/sys/kernel/btf/vmlinux`):
//! the verifier identifies a kfunc by the BTF id of its `FUNC` type.
//!
//! BTF is a header, a type section and a string section. Types have no index:
//! a type's id is its position (from 1), and each kind is followed by a
//! kind-specific number of bytes, so finding id N means walking every type
//! before it and knowing every kind's size.

use crate::elf::cstr_at;
use crate::BpfError;

/// Where the kernel exposes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_FUNC: u32 = 12;

fn err(msg: impl Into<String>) -> BpfError {
    BpfError::Btf(msg.into())
}

/// Bytes following the 12-byte `struct btf_type` for a kind with `vlen`
/// members (see include/uapi/linux/btf.h).
fn trailing_len(kind: u32, vlen: usize) -> Result<usize, BpfError> {
    Ok(match kind {
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
        // INT: encoding; VAR: linkage; DECL_TAG: component_idx
        1 | 14 | 17 => 4,
        // ARRAY: struct btf_array
        3 => 12,
        // STRUCT, UNION: btf_member; DATASEC: btf_var_secinfo; ENUM64: btf_enum64
        4 | 5 | 15 | 19 => 12 * vlen,
        // ENUM: btf_enum; FUNC_PROTO: btf_param
        6 | 13 => 8 * vlen,
        _ => return Err(err(format!("unknown BTF kind {kind} (a newer kernel?)"))),
    })
}

/// The id of the `FUNC` type named `name`.
pub fn btf_func_id(btf: &[u8], name: &str) -> Result<u32, BpfError> {
    let word = |off: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            btf.get(off..off.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    let magic = btf.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    if magic != Some(BTF_MAGIC) {
        return Err(err("bad magic (not little-endian BTF)"));
    }
    let (hdr_len, type_off, type_len, str_off, str_len) =
        match (word(4), word(8), word(12), word(16), word(20)) {
            (Some(h), Some(to), Some(tl), Some(so), Some(sl)) if h >= 24 => (
                h as usize,
                to as usize,
                tl as usize,
                so as usize,
                sl as usize,
            ),
            _ => return Err(err("truncated header")),
        };
    let section = |off: usize, len: usize, what: &str| {
        hdr_len
            .checked_add(off)
            .and_then(|s| Some((s, s.checked_add(len)?)))
            .and_then(|(s, e)| btf.get(s..e))
            .ok_or_else(|| err(format!("{what} section lies outside the data")))
    };
    let types = section(type_off, type_len, "type")?;
    let strings = section(str_off, str_len, "string")?;

    let mut off = 0;
    let mut id: u32 = 1;
    while off < types.len() {
        let t = types
            .get(off..off + 12)
            .ok_or_else(|| err(format!("type {id} is truncated")))?;
        let field = |i: usize| u32::from_le_bytes(t[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        let (name_off, info) = (field(0), field(1));
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        if kind == KIND_FUNC && cstr_at(strings, name_off as usize) == Some(name) {
            return Ok(id);
        }
        off += 12 + trailing_len(kind, vlen)?;
        id += 1;
    }
    if off != types.len() {
        return Err(err(format!("type {} runs past the type section", id - 1)));
    }
    Err(BpfError::KfuncNotFound {
        name: name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmlinux() -> Vec<u8> {
        std::fs::read(VMLINUX_BTF)
            .expect("read /sys/kernel/btf/vmlinux (kernel with CONFIG_DEBUG_INFO_BTF)")
    }

    #[test]
    fn finds_conntrack_kfuncs_in_vmlinux() {
        let btf = vmlinux();
        let lookup = btf_func_id(&btf, "bpf_skb_ct_lookup").unwrap();
        let release = btf_func_id(&btf, "bpf_ct_release").unwrap();
        assert!(lookup > 0 && release > 0 && lookup != release);
    }

    #[test]
    fn missing_name_is_a_clear_error() {
        let e = btf_func_id(&vmlinux(), "weft_no_such_kfunc").unwrap_err();
        assert!(matches!(e, BpfError::KfuncNotFound { .. }), "{e}");
        assert!(e.to_string().contains("weft_no_such_kfunc"), "{e}");
        // a struct of that name is not a FUNC
        assert!(btf_func_id(&vmlinux(), "sk_buff").is_err());
    }

    #[test]
    fn malformed_btf_errors_without_panicking() {
        let btf = vmlinux();
        assert!(btf_func_id(&[], "x").is_err());
        assert!(btf_func_id(b"garbage garbage garbage garbage", "x").is_err());
        for len in [1, 4, 23, 24, 25, 100, 4096, btf.len() / 2] {
            let e = btf_func_id(&btf[..len], "bpf_ct_release");
            assert!(matches!(e, Err(BpfError::Btf(_))), "len {len}: {e:?}");
        }
    }

    /// BTF with the given type records and string table.
    fn synth(types: &[u32], strings: &[u8]) -> Vec<u8> {
        let tlen = (types.len() * 4) as u32;
        let mut b = vec![0x9f, 0xeb, 1, 0];
        for w in [24, 0, tlen, tlen, strings.len() as u32] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        types
            .iter()
            .for_each(|w| b.extend_from_slice(&w.to_le_bytes()));
        b.extend_from_slice(strings);
        b
    }

    #[test]
    fn walks_every_kind_to_count_ids() {
        let strings = b"\0int\0s\0f\0";
        let int = [1, 1 << 24, 4, 32];
        // struct s { int a, b; }: two 12-byte members
        let st = [5, (4 << 24) | 2, 8, 1, 1, 0, 1, 1, 32];
        let func = [7, 12 << 24, 0];
        let btf = synth(&[&int[..], &st, &func].concat(), strings);
        assert_eq!(btf_func_id(&btf, "f").unwrap(), 3);
        assert!(matches!(
            btf_func_id(&btf, "s"),
            Err(BpfError::KfuncNotFound { .. })
        ));
        // an unknown kind before the function stops the walk
        let bad = synth(&[&[1, 31 << 24, 4][..], &func].concat(), strings);
        assert!(matches!(btf_func_id(&bad, "f"), Err(BpfError::Btf(_))));
        // a struct whose members run past the section
        let short = synth(&[1, (4 << 24) | 3, 8, 1, 1, 0], strings);
        assert!(matches!(btf_func_id(&short, "f"), Err(BpfError::Btf(_))));
    }
}
