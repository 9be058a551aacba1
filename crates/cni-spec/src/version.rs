//! CNI spec versions weft answers, which verbs each allows, and the VERSION
//! reply.
//!
//! Verb availability follows the spec and libcni's `skel`: CHECK arrived in
//! 0.4.0, GC and STATUS in 1.1.0. A config of an older version asking for a
//! newer verb is an incompatible-version error (code 1).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::env::Command;
use crate::error::{codes, CniError};

/// A supported CNI spec version. Ordered oldest to newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

/// Every version weft-cni supports, oldest first, as printed by VERSION.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

impl CniVersion {
    /// Every supported version, oldest first.
    pub const ALL: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];
    /// The newest supported version; used when the config's is unknown.
    pub const NEWEST: CniVersion = CniVersion::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Parses a version string; anything unsupported is code 1 with the
    /// supported versions in the details.
    pub fn parse(s: &str) -> Result<CniVersion, CniError> {
        CniVersion::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| unsupported_version(s))
    }

    /// Whether a config of this version may ask for `command`.
    pub fn allows(self, command: Command) -> bool {
        self >= command.min_version()
    }

    /// Code 1 when this version does not allow `command`.
    pub fn check_allows(self, command: Command) -> Result<(), CniError> {
        if self.allows(command) {
            return Ok(());
        }
        Err(CniError::new(
            codes::INCOMPATIBLE_VERSION,
            format!(
                "config version {} does not allow {}, which needs cniVersion {} or newer; raise cniVersion in the network config",
                self,
                command.as_str(),
                command.min_version()
            ),
        )
        .with_details(supported_details()))
    }

    /// 0.3.x and 0.4.0 results carry `"version": "4"|"6"` in each ip entry;
    /// 1.0.0 dropped it.
    pub fn ips_carry_version(self) -> bool {
        self < CniVersion::V1_0_0
    }

    /// 1.1.0 added `mtu` to result interfaces.
    pub fn interfaces_carry_mtu(self) -> bool {
        self >= CniVersion::V1_1_0
    }
}

fn supported_details() -> String {
    format!("supported versions: {}", SUPPORTED_VERSIONS.join(", "))
}

fn unsupported_version(s: &str) -> CniError {
    let shown: String = s.chars().take(32).collect();
    CniError::new(
        codes::INCOMPATIBLE_VERSION,
        format!(
            "cniVersion {shown:?} is not supported by weft-cni; set cniVersion to one of {} in the network config",
            SUPPORTED_VERSIONS.join(", ")
        ),
    )
    .with_details(supported_details())
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CniVersion {
    type Err = CniError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CniVersion::parse(s)
    }
}

impl Serialize for CniVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CniVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CniVersion::parse(&s).map_err(|e| serde::de::Error::custom(e.msg))
    }
}

/// The VERSION reply: `{"cniVersion": ..., "supportedVersions": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionReply {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "supportedVersions")]
    pub supported_versions: Vec<String>,
}

/// Answers VERSION. `stdin` is whatever the runtime sent (usually
/// `{"cniVersion": "x.y.z"}`, possibly nothing): the reply is in the
/// requested version when weft supports it, else in the newest. VERSION
/// never fails, so a runtime can always probe.
pub fn version_reply(stdin: &[u8]) -> VersionReply {
    let version = sniff_cni_version(stdin).unwrap_or(CniVersion::NEWEST);
    VersionReply {
        cni_version: version.as_str().to_string(),
        supported_versions: SUPPORTED_VERSIONS.iter().map(|s| s.to_string()).collect(),
    }
}

/// Best effort: the supported `cniVersion` of a config, or `None` when the
/// bytes are not JSON, have no such field, or name an unsupported version.
/// Used to stamp errors with the config's version even when the config is
/// otherwise invalid.
pub fn sniff_cni_version(bytes: &[u8]) -> Option<CniVersion> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "cniVersion")]
        cni_version: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    CniVersion::parse(probe.cni_version?.as_str()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_supported_version() {
        for (v, s) in CniVersion::ALL.iter().zip(SUPPORTED_VERSIONS) {
            assert_eq!(CniVersion::parse(s).unwrap(), *v);
            assert_eq!(v.as_str(), s);
            assert_eq!(v.to_string(), s);
            assert_eq!(s.parse::<CniVersion>().unwrap(), *v);
        }
        assert!(CniVersion::ALL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(CniVersion::NEWEST, *CniVersion::ALL.last().unwrap());
    }

    #[test]
    fn unsupported_versions_are_code_1_with_details() {
        for s in [
            "0.1.0", "0.2.0", "9.9.9", "", "1.1", "v1.0.0", " 1.0.0", "1.0.0 ",
        ] {
            let e = CniVersion::parse(s).unwrap_err();
            assert_eq!(e.code, codes::INCOMPATIBLE_VERSION, "{s}");
            assert!(
                e.details.contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
                "{e:?}"
            );
            assert!(e.msg.contains("set cniVersion"), "{e:?}");
        }
        // Long hostile strings are cut in the message.
        let e = CniVersion::parse(&"x".repeat(10_000)).unwrap_err();
        assert!(e.msg.len() < 300);
    }

    #[test]
    fn verbs_per_version() {
        use Command::*;
        for v in CniVersion::ALL {
            assert!(v.allows(Add) && v.allows(Del) && v.allows(Version));
            assert_eq!(v.allows(Check), v >= CniVersion::V0_4_0, "{v}");
            assert_eq!(v.allows(Gc), v == CniVersion::V1_1_0, "{v}");
            assert_eq!(v.allows(Status), v == CniVersion::V1_1_0, "{v}");
        }
        let e = CniVersion::V0_3_1.check_allows(Check).unwrap_err();
        assert_eq!(e.code, codes::INCOMPATIBLE_VERSION);
        assert!(e.msg.contains("CHECK") && e.msg.contains("0.4.0"), "{e:?}");
        let e = CniVersion::V1_0_0.check_allows(Gc).unwrap_err();
        assert!(e.msg.contains("GC") && e.msg.contains("1.1.0"), "{e:?}");
        assert!(CniVersion::V1_0_0.check_allows(Check).is_ok());
    }

    #[test]
    fn result_shape_flags() {
        assert!(CniVersion::V0_4_0.ips_carry_version());
        assert!(!CniVersion::V1_0_0.ips_carry_version());
        assert!(!CniVersion::V1_0_0.interfaces_carry_mtu());
        assert!(CniVersion::V1_1_0.interfaces_carry_mtu());
    }

    #[test]
    fn version_reply_uses_config_version_or_newest() {
        let r = version_reply(br#"{"cniVersion":"0.3.1"}"#);
        assert_eq!(r.cni_version, "0.3.1");
        assert_eq!(r.supported_versions, SUPPORTED_VERSIONS);
        for junk in [
            &b""[..],
            b"{",
            b"[]",
            br#"{"cniVersion":"0.2.0"}"#,
            br#"{"cniVersion":7}"#,
        ] {
            assert_eq!(version_reply(junk).cni_version, "1.1.0");
        }
        let json = serde_json::to_value(version_reply(b"")).unwrap();
        assert_eq!(json["cniVersion"], "1.1.0");
        assert_eq!(json["supportedVersions"][4], "1.1.0");
    }

    #[test]
    fn serde_round_trip() {
        let v: CniVersion = serde_json::from_str("\"0.4.0\"").unwrap();
        assert_eq!(v, CniVersion::V0_4_0);
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"0.4.0\"");
        assert!(serde_json::from_str::<CniVersion>("\"0.2.0\"").is_err());
    }
}
