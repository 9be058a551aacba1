//! The version-neutral result of an attachment. weftd produces it; weft-cni
//! renders it in the result format of the config's cniVersion.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    /// Lower-case colon-separated hardware address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; `None` on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with prefix length, e.g. 10.244.0.5/32.
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// What an ADD produced, independent of CNI version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeutralResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
}

fn invalid(msg: String) -> crate::error::CniError {
    crate::error::CniError::new(crate::error::codes::INVALID_NETWORK_CONFIG, msg)
}

fn bad_field(field: &str, want: &str) -> crate::error::CniError {
    invalid(format!(
        "{field} must be {want}; the runtime passed a malformed result (is its result cache corrupt?)"
    ))
}

fn opt_str<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
    field: &str,
) -> Result<Option<&'a str>, crate::error::CniError> {
    match obj.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad_field(&format!("{field}.{key}"), "a string")),
    }
}

fn opt_index(
    obj: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    field: &str,
) -> Result<Option<u64>, crate::error::CniError> {
    match obj.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(_) => Err(bad_field(
            &format!("{field}.{key}"),
            "a non-negative integer",
        )),
    }
}

fn list<'a>(
    obj: &'a serde_json::Map<String, serde_json::Value>,
    key: &str,
    field: &str,
) -> Result<&'a [serde_json::Value], crate::error::CniError> {
    match obj.get(key) {
        None | Some(serde_json::Value::Null) => Ok(&[]),
        Some(serde_json::Value::Array(items)) => Ok(items),
        Some(_) => Err(bad_field(&format!("{field}.{key}"), "a list")),
    }
}

/// Parses a CNI result of any supported version (0.3.0 through 1.1.0: the
/// 0.x `"version"` in ips is accepted and checked, never required) into a
/// [`NeutralResult`]. `field` names the value in errors (e.g.
/// `"prevResult"`). Errors are code 7 naming the exact field. DNS and
/// fields weft does not model are not part of the neutral result.
pub fn parse_result(
    value: &serde_json::Value,
    field: &str,
) -> Result<NeutralResult, crate::error::CniError> {
    let serde_json::Value::Object(obj) = value else {
        return Err(bad_field(field, "an object"));
    };
    let mut out = NeutralResult::default();
    for (i, item) in list(obj, "interfaces", field)?.iter().enumerate() {
        let f = format!("{field}.interfaces[{i}]");
        let serde_json::Value::Object(o) = item else {
            return Err(bad_field(&f, "an object"));
        };
        let name = match opt_str(o, "name", &f)? {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => return Err(bad_field(&format!("{f}.name"), "a non-empty string")),
        };
        let mtu = match opt_index(o, "mtu", &f)? {
            None => None,
            Some(m) => {
                Some(u32::try_from(m).map_err(|_| bad_field(&format!("{f}.mtu"), "a valid mtu"))?)
            }
        };
        out.interfaces.push(Interface {
            name,
            mac: opt_str(o, "mac", &f)?.unwrap_or_default().to_string(),
            mtu,
            sandbox: opt_str(o, "sandbox", &f)?
                .filter(|s| !s.is_empty())
                .map(String::from),
        });
    }
    for (i, item) in list(obj, "ips", field)?.iter().enumerate() {
        let f = format!("{field}.ips[{i}]");
        let serde_json::Value::Object(o) = item else {
            return Err(bad_field(&f, "an object"));
        };
        let address: IpNet = opt_str(o, "address", &f)?
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad_field(&format!("{f}.address"), "an address with prefix length"))?;
        let gateway = match opt_str(o, "gateway", &f)? {
            None | Some("") => None,
            Some(g) => Some(
                g.parse::<IpAddr>()
                    .map_err(|_| bad_field(&format!("{f}.gateway"), "an ip address"))?,
            ),
        };
        let interface = match opt_index(o, "interface", &f)? {
            None => None,
            Some(ix) if (ix as usize) < out.interfaces.len() && ix <= usize::MAX as u64 => {
                Some(ix as usize)
            }
            Some(_) => {
                return Err(bad_field(
                    &format!("{f}.interface"),
                    "an index into the result's interfaces",
                ))
            }
        };
        match (opt_str(o, "version", &f)?, &address) {
            (None, _) | (Some("4"), IpNet::V4(_)) | (Some("6"), IpNet::V6(_)) => {}
            _ => {
                return Err(bad_field(
                    &format!("{f}.version"),
                    "\"4\" or \"6\" matching the address",
                ))
            }
        }
        out.ips.push(IpConfig {
            address,
            gateway,
            interface,
        });
    }
    for (i, item) in list(obj, "routes", field)?.iter().enumerate() {
        let f = format!("{field}.routes[{i}]");
        let serde_json::Value::Object(o) = item else {
            return Err(bad_field(&f, "an object"));
        };
        let dst: IpNet = opt_str(o, "dst", &f)?
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad_field(&format!("{f}.dst"), "a cidr"))?;
        let gw = match opt_str(o, "gw", &f)? {
            None | Some("") => None,
            Some(g) => Some(
                g.parse::<IpAddr>()
                    .map_err(|_| bad_field(&format!("{f}.gw"), "an ip address"))?,
            ),
        };
        out.routes.push(Route { dst, gw });
    }
    Ok(out)
}
