//! The one rule for an interface name, shared by the shim (`CNI_IFNAME`),
//! weftd (every request's attachment) and the data path (every name it
//! hands the kernel).
//!
//! The spec and Linux's `dev_valid_name`: 1..=15 bytes, not "." or "..", no
//! '/', ':', whitespace or NUL. weft also refuses control characters and
//! U+FFFD (what a non-UTF-8 name turns into), which the kernel would take
//! but no tool shows faithfully.

/// The longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Why a name is not an interface name; the message reads after the name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfnameError {
    #[error("is empty")]
    Empty,
    #[error("is {0} bytes, longer than the Linux limit of {MAX_IFNAME_LEN}")]
    TooLong(usize),
    #[error("is not a valid interface name")]
    Reserved,
    #[error("contains {0}, which interface names cannot")]
    Forbidden(&'static str),
}

/// Checks `name` against the rule above.
pub fn validate_ifname(name: &str) -> Result<(), IfnameError> {
    if name.is_empty() {
        return Err(IfnameError::Empty);
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(IfnameError::TooLong(name.len()));
    }
    if name == "." || name == ".." {
        return Err(IfnameError::Reserved);
    }
    for c in name.chars() {
        let bad = match c {
            '/' | ':' => Some("'/' or ':'"),
            '\0' => Some("a NUL byte"),
            c if c.is_whitespace() => Some("whitespace"),
            c if c.is_control() => Some("a control character"),
            '\u{FFFD}' => Some("invalid utf-8"),
            _ => None,
        };
        if let Some(what) = bad {
            return Err(IfnameError::Forbidden(what));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        for good in [
            "eth0",
            "e",
            "abcdefghijklmno",
            "net1.100",
            "veth-x_y",
            "éth0",
            "weft1a2b3c4d5e6",
        ] {
            assert_eq!(validate_ifname(good), Ok(()), "{good:?}");
        }
        for (bad, why) in [
            ("", IfnameError::Empty),
            ("abcdefghijklmnop", IfnameError::TooLong(16)),
            // 8 two-byte characters: 16 bytes
            ("éééééééé", IfnameError::TooLong(16)),
            (".", IfnameError::Reserved),
            ("..", IfnameError::Reserved),
            ("a/b", IfnameError::Forbidden("'/' or ':'")),
            ("a:b", IfnameError::Forbidden("'/' or ':'")),
            ("a b", IfnameError::Forbidden("whitespace")),
            ("a\tb", IfnameError::Forbidden("whitespace")),
            ("a\u{a0}b", IfnameError::Forbidden("whitespace")),
            ("a\0b", IfnameError::Forbidden("a NUL byte")),
            ("a\u{7f}b", IfnameError::Forbidden("a control character")),
            ("a\u{fffd}", IfnameError::Forbidden("invalid utf-8")),
        ] {
            assert_eq!(validate_ifname(bad), Err(why), "{bad:?}");
        }
        assert_eq!(
            IfnameError::TooLong(16).to_string(),
            "is 16 bytes, longer than the Linux limit of 15"
        );
    }
}
