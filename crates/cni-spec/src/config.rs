//! The network configuration weft-cni reads on stdin.
//!
//! Parsing walks a `serde_json::Value` by hand so every error names the
//! field at fault. Unknown fields are ignored (the spec lets runtimes and
//! chains add their own). Error codes:
//!
//! * bytes that are not JSON: 6 (decode failure);
//! * JSON of the wrong shape or an invalid value: 7, naming the field;
//! * a config over [`MAX_CONFIG_BYTES`]: 7, giving the size and the limit;
//! * an unsupported `cniVersion`: 1.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::env::{shorten, Command};
use crate::error::{codes, CniError};
use crate::result::{parse_result, NeutralResult};
use crate::version::CniVersion;

/// Largest network config accepted on stdin.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
/// The `type` weft-cni is installed under. Only a name the runtime used to
/// find the binary: like the reference plugins, weft-cni answers to any
/// `type`, so a renamed binary or a logging wrapper works.
pub const PLUGIN_TYPE: &str = "weft-cni";
/// Smallest MTU accepted (the IPv4 minimum).
pub const MIN_MTU: u32 = 68;
/// Largest MTU accepted.
pub const MAX_MTU: u32 = 65535;
/// `sun_path` is 108 bytes including the terminating NUL.
pub const MAX_SOCKET_PATH_LEN: usize = 107;

/// Which address families a pod gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpFamilies {
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Default for IpFamilies {
    fn default() -> Self {
        IpFamilies {
            ipv4: true,
            ipv6: true,
        }
    }
}

/// `logLevel`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValidAttachment {
    pub container_id: String,
    pub ifname: String,
}

/// The parsed network configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: CniVersion,
    pub name: String,
    /// `type` as given (usually [`PLUGIN_TYPE`]; any name is accepted).
    pub plugin_type: String,
    /// `agentSocket`: weftd's socket; `None` means the shim's default.
    pub agent_socket: Option<String>,
    /// `spoolDir`: where undeliverable DELs go; `None` means the default.
    pub spool_dir: Option<String>,
    /// `mtu`, 68..=65535; `None` means weftd derives it.
    pub mtu: Option<u32>,
    /// `ipFamilies`, default both.
    pub ip_families: IpFamilies,
    /// `logFile`: absolute path; no logging when `None`.
    pub log_file: Option<String>,
    /// `logLevel`, default info.
    pub log_level: LogLevel,
    /// `runtimeConfig.ips`, prefix lengths stripped.
    pub runtime_ips: Vec<IpAddr>,
    /// `args.cni.ips`, prefix lengths stripped.
    pub args_ips: Vec<IpAddr>,
    /// `prevResult`, verbatim, for pass-through and merging.
    pub prev_result: Option<Value>,
    /// `cni.dev/valid-attachments` (or libcni's alias `cni.dev/attachments`).
    /// `None` when absent; GC refuses to run without it.
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

fn invalid(msg: impl Into<String>) -> CniError {
    CniError::new(codes::INVALID_NETWORK_CONFIG, msg)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(field: &str, want: &str, got: &Value) -> CniError {
    invalid(format!(
        "network config field {field} must be {want}, not {}; fix it in the network config",
        type_name(got)
    ))
}

fn get_str<'a>(obj: &'a Map<String, Value>, field: &str) -> Result<Option<&'a str>, CniError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(field, "a string", other)),
    }
}

fn absolute_path(obj: &Map<String, Value>, field: &str) -> Result<Option<String>, CniError> {
    match get_str(obj, field)? {
        None => Ok(None),
        Some(p) if p.starts_with('/') && !p.contains('\0') => Ok(Some(p.to_string())),
        Some(p) => Err(invalid(format!(
            "network config field {field} {:?} is not an absolute path; give a path starting with '/'",
            shorten(p)
        ))),
    }
}

/// Parses a list of "addr" or "addr/len" strings.
fn ip_list(v: &Value, field: &str) -> Result<Vec<IpAddr>, CniError> {
    let Value::Array(items) = v else {
        return Err(wrong_type(field, "a list of ip addresses", v));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let Value::String(s) = item else {
            return Err(wrong_type(&f, "a string", item));
        };
        let addr: Option<IpAddr> = if s.contains('/') {
            s.parse::<IpNet>().ok().map(|n| n.addr())
        } else {
            s.parse().ok()
        };
        match addr {
            Some(a) => out.push(a),
            None => {
                return Err(invalid(format!(
                    "network config field {f} {:?} is not an ip address (\"10.0.0.5\" or \"10.0.0.5/24\"); fix the pod's requested ips",
                    shorten(s)
                )))
            }
        }
    }
    Ok(out)
}

/// The code-7 error for a config of `len` bytes, over [`MAX_CONFIG_BYTES`].
pub fn too_large(len: usize) -> CniError {
    invalid(format!(
        "network config is {len} bytes, over the limit of {MAX_CONFIG_BYTES} bytes; shrink the config the runtime passes on stdin"
    ))
}

fn missing_cni_version() -> CniError {
    invalid(
        "network config field cniVersion is missing; add \"cniVersion\": \"1.0.0\" to the config (the newest every libcni-1.1 runtime accepts)",
    )
}

impl NetConf {
    /// Parses and validates a network config.
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        if bytes.len() > MAX_CONFIG_BYTES {
            return Err(too_large(bytes.len()));
        }
        let root: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                codes::DECODE_FAILURE,
                "network config on stdin is not valid json; fix the config file in the runtime's CNI config directory",
            )
            .with_details(e.to_string())
        })?;
        let Value::Object(obj) = root else {
            return Err(invalid(format!(
                "network config must be a json object, not {}; fix the config file",
                type_name(&root)
            )));
        };

        // libcni (cnitool, podman, containerd) injects `"cniVersion": ""`
        // when the config file has none: that is the same mistake. The advice
        // is 1.0.0, not the newest: libcni 1.1 runtimes reject results newer
        // than 1.0.0, after weft has already done the ADD.
        let cni_version = match obj.get("cniVersion") {
            None | Some(Value::Null) => return Err(missing_cni_version()),
            Some(Value::String(s)) if s.is_empty() => return Err(missing_cni_version()),
            Some(Value::String(s)) => CniVersion::parse(s)?,
            Some(other) => return Err(wrong_type("cniVersion", "a string", other)),
        };

        let name = match get_str(&obj, "name")? {
            None | Some("") => {
                return Err(invalid(
                    "network config field name is missing or empty; give the network a name",
                ))
            }
            Some(n) => n,
        };
        if let Err(why) = validate_network_name(name) {
            return Err(invalid(format!(
                "network config field name {:?} {why}; rename the network",
                shorten(name)
            )));
        }

        // the runtime found this binary by `type`; which name it was is not
        // ours to judge (the spec's reference plugins do not check it either)
        let plugin_type = match get_str(&obj, "type")? {
            Some(t) if !t.is_empty() => t.to_string(),
            _ => {
                return Err(invalid(format!(
                    "network config field type is missing or empty; set it to the plugin's binary name (\"{PLUGIN_TYPE}\")"
                )))
            }
        };

        let agent_socket = absolute_path(&obj, "agentSocket")?;
        if let Some(s) = &agent_socket {
            if s.len() > MAX_SOCKET_PATH_LEN {
                return Err(invalid(format!(
                    "network config field agentSocket is {} bytes, longer than the unix socket limit of {MAX_SOCKET_PATH_LEN}; use a shorter path",
                    s.len()
                )));
            }
        }
        let spool_dir = absolute_path(&obj, "spoolDir")?;
        let log_file = absolute_path(&obj, "logFile")?;

        let mtu = match obj.get("mtu") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(m) if (MIN_MTU as u64..=MAX_MTU as u64).contains(&m) => Some(m as u32),
                _ => {
                    return Err(invalid(format!(
                        "network config field mtu is {n}, outside {MIN_MTU}..={MAX_MTU}; set a valid mtu or drop the field to derive it from the underlay"
                    )))
                }
            },
            Some(other) => return Err(wrong_type("mtu", "an integer", other)),
        };

        let ip_families = match obj.get("ipFamilies") {
            None | Some(Value::Null) => IpFamilies::default(),
            Some(Value::Array(items)) => {
                let mut fam = IpFamilies {
                    ipv4: false,
                    ipv6: false,
                };
                for (i, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some("ipv4") => fam.ipv4 = true,
                        Some("ipv6") => fam.ipv6 = true,
                        _ => {
                            return Err(invalid(format!(
                                "network config field ipFamilies[{i}] must be \"ipv4\" or \"ipv6\", not {}",
                                shorten(&item.to_string())
                            )))
                        }
                    }
                }
                if !fam.ipv4 && !fam.ipv6 {
                    return Err(invalid(
                        "network config field ipFamilies is empty; list \"ipv4\", \"ipv6\" or both",
                    ));
                }
                fam
            }
            Some(other) => return Err(wrong_type("ipFamilies", "a list of strings", other)),
        };

        let log_level = match get_str(&obj, "logLevel")? {
            None => LogLevel::default(),
            Some("error") => LogLevel::Error,
            Some("warn") => LogLevel::Warn,
            Some("info") => LogLevel::Info,
            Some("debug") => LogLevel::Debug,
            Some(other) => {
                return Err(invalid(format!(
                    "network config field logLevel {:?} is not one of error, warn, info, debug",
                    shorten(other)
                )))
            }
        };

        // runtimeConfig: ips is ours; portMappings, bandwidth and the rest
        // belong to chained plugins and are ignored.
        let runtime_ips = match obj.get("runtimeConfig") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(rc)) => match rc.get("ips") {
                None | Some(Value::Null) => Vec::new(),
                Some(v) => ip_list(v, "runtimeConfig.ips")?,
            },
            Some(other) => return Err(wrong_type("runtimeConfig", "an object", other)),
        };

        // args may carry anything; only args.cni.ips is read, and only it
        // is checked.
        let args_ips = match obj
            .get("args")
            .and_then(|a| a.get("cni"))
            .and_then(|c| c.get("ips"))
        {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => ip_list(v, "args.cni.ips")?,
        };

        for (field, ips) in [
            ("runtimeConfig.ips", &runtime_ips),
            ("args.cni.ips", &args_ips),
        ] {
            for ip in ips.iter() {
                let (ok, fam) = match ip {
                    IpAddr::V4(_) => (ip_families.ipv4, "ipv4"),
                    IpAddr::V6(_) => (ip_families.ipv6, "ipv6"),
                };
                if !ok {
                    return Err(invalid(format!(
                        "network config field {field} asks for {ip}, but ipFamilies excludes {fam}; drop the address or add {fam} to ipFamilies"
                    )));
                }
            }
        }

        let prev_result = match obj.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(other) => return Err(wrong_type("prevResult", "an object", other)),
        };

        let attachments_key = if obj.contains_key("cni.dev/valid-attachments") {
            Some("cni.dev/valid-attachments")
        } else if obj.contains_key("cni.dev/attachments") {
            Some("cni.dev/attachments")
        } else {
            None
        };
        let valid_attachments = match attachments_key.map(|k| (k, &obj[k])) {
            None | Some((_, Value::Null)) => None,
            Some((key, Value::Array(items))) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let f = format!("{key}[{i}]");
                    let Value::Object(a) = item else {
                        return Err(wrong_type(&f, "an object", item));
                    };
                    let field = |k: &str| -> Result<String, CniError> {
                        match a.get(k) {
                            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                            Some(Value::String(_)) | None | Some(Value::Null) => Err(invalid(format!(
                                "network config field {f}.{k} is missing or empty; the runtime must list containerID and ifname for every valid attachment"
                            ))),
                            Some(other) => Err(wrong_type(&format!("{f}.{k}"), "a string", other)),
                        }
                    };
                    out.push(ValidAttachment {
                        container_id: field("containerID")?,
                        ifname: field("ifname")?,
                    });
                }
                Some(out)
            }
            Some((key, other)) => return Err(wrong_type(key, "a list of attachments", other)),
        };

        Ok(NetConf {
            cni_version,
            name: name.to_string(),
            plugin_type,
            agent_socket,
            spool_dir,
            mtu,
            ip_families,
            log_file,
            log_level,
            runtime_ips,
            args_ips,
            prev_result,
            valid_attachments,
        })
    }

    /// `runtimeConfig.ips` then `args.cni.ips`, duplicates dropped, order kept.
    pub fn requested_ips(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for ip in self.runtime_ips.iter().chain(&self.args_ips) {
            if !out.contains(ip) {
                out.push(*ip);
            }
        }
        out
    }

    /// `prevResult` as a neutral result (any supported version's shape);
    /// `None` when absent; code 7 naming the field when malformed.
    pub fn prev_result_neutral(&self) -> Result<Option<NeutralResult>, CniError> {
        self.prev_result
            .as_ref()
            .map(|v| parse_result(v, "prevResult"))
            .transpose()
    }

    /// Checks what a verb needs beyond the generic parse: the verb is
    /// allowed by `cniVersion` (code 1) and GC has its attachment list
    /// (code 7; an absent list must never mean "collect everything").
    pub fn check_for(&self, command: Command) -> Result<(), CniError> {
        self.cni_version.check_allows(command)?;
        if command == Command::Gc && self.valid_attachments.is_none() {
            return Err(invalid(
                "GC needs cni.dev/valid-attachments in the network config and it is missing; refusing to garbage-collect without the list of live attachments",
            ));
        }
        Ok(())
    }
}

/// libcni's rule for network names: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
/// weft caps the length like container ids.
pub fn validate_network_name(name: &str) -> Result<(), String> {
    crate::env::validate_container_id(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<NetConf, CniError> {
        NetConf::parse(
            format!(r#"{{"cniVersion":"1.1.0","name":"n","type":"weft-cni"{extra}}}"#).as_bytes(),
        )
    }

    #[test]
    fn each_field_error_names_the_field() {
        let cases: &[(&str, &str)] = &[
            (r#","type":5"#, "type must be a string"),
            (r#","agentSocket":7"#, "agentSocket must be a string"),
            (
                r#","agentSocket":"run/weftd.sock""#,
                "agentSocket \"run/weftd.sock\" is not an absolute path",
            ),
            (
                r#","spoolDir":"spool""#,
                "spoolDir \"spool\" is not an absolute path",
            ),
            (r#","spoolDir":[]"#, "spoolDir must be a string"),
            (r#","logFile":"/a\u0000b""#, "logFile"),
            (r#","logLevel":3"#, "logLevel must be a string"),
            (r#","mtu":1500.5"#, "mtu is 1500.5"),
            (r#","mtu":67"#, "mtu is 67"),
            (r#","mtu":true"#, "mtu must be an integer, not a boolean"),
            (r#","ipFamilies":[4]"#, "ipFamilies[0]"),
            (
                r#","runtimeConfig":{"ips":"10.0.0.1"}"#,
                "runtimeConfig.ips must be a list",
            ),
            (
                r#","runtimeConfig":{"ips":[1]}"#,
                "runtimeConfig.ips[0] must be a string, not a number",
            ),
            (
                r#","runtimeConfig":{"ips":[""]}"#,
                "runtimeConfig.ips[0] \"\" is not an ip address",
            ),
            (
                r#","args":{"cni":{"ips":[null]}}"#,
                "args.cni.ips[0] must be a string, not null",
            ),
            (
                r#","ipFamilies":["ipv6"],"args":{"cni":{"ips":["10.0.0.1"]}}"#,
                "args.cni.ips asks for 10.0.0.1",
            ),
            (
                r#","cni.dev/valid-attachments":[1]"#,
                "cni.dev/valid-attachments[0] must be an object",
            ),
            (
                r#","cni.dev/valid-attachments":[{"containerID":1,"ifname":"eth0"}]"#,
                "cni.dev/valid-attachments[0].containerID must be a string",
            ),
            (
                r#","cni.dev/valid-attachments":[{"containerID":"","ifname":"eth0"}]"#,
                "cni.dev/valid-attachments[0].containerID is missing or empty",
            ),
            (
                r#","cni.dev/attachments":"x""#,
                "cni.dev/attachments must be a list",
            ),
            (r#","prevResult":[]"#, "prevResult must be an object"),
        ];
        for (extra, want) in cases {
            let e = parse(extra).expect_err(extra);
            assert_eq!(e.code, codes::INVALID_NETWORK_CONFIG, "{extra}");
            assert!(e.msg.contains(want), "{extra}: {:?} lacks {want:?}", e.msg);
            assert!(!e.msg.ends_with('.'));
        }
    }

    #[test]
    fn nulls_mean_absent_and_lenient_args() {
        let c = parse(
            r#","agentSocket":null,"spoolDir":null,"mtu":null,"ipFamilies":null,"runtimeConfig":null,"prevResult":null,"cni.dev/valid-attachments":null,"args":"whatever""#,
        )
        .unwrap();
        assert_eq!(c.agent_socket, None);
        assert_eq!(c.valid_attachments, None);
        assert_eq!(c.ip_families, IpFamilies::default());
        // An empty GC list is a real list: everything may be collected.
        let c = parse(r#","cni.dev/valid-attachments":[]"#).unwrap();
        assert_eq!(c.valid_attachments, Some(vec![]));
        assert!(c.check_for(Command::Gc).is_ok());
        // The spec name wins over libcni's alias when both are present.
        let c = parse(
            r#","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],"cni.dev/attachments":[]"#,
        )
        .unwrap();
        assert_eq!(c.valid_attachments.unwrap().len(), 1);
    }

    /// Interop (cnitool, libcni 1.1.2): a config file without cniVersion
    /// reaches the plugin as `"cniVersion": ""`. It is reported as missing,
    /// and the advice is a version libcni-1.1 runtimes accept (1.0.0): with
    /// 1.1.0 they reject weft's result after the ADD was done.
    #[test]
    fn empty_cni_version_is_missing_and_advice_suits_libcni() {
        for conf in [
            r#"{"cniVersion":"","name":"n","type":"weft-cni"}"#,
            r#"{"name":"n","type":"weft-cni"}"#,
        ] {
            let e = NetConf::parse(conf.as_bytes()).expect_err(conf);
            assert_eq!(e.code, codes::INVALID_NETWORK_CONFIG, "{conf}");
            assert!(e.msg.contains("cniVersion is missing"), "{}", e.msg);
            assert!(e.msg.contains(r#""cniVersion": "1.0.0""#), "{}", e.msg);
        }
    }

    #[test]
    fn boundaries() {
        assert_eq!(parse(r#","mtu":68"#).unwrap().mtu, Some(68));
        assert_eq!(parse(r#","mtu":65535"#).unwrap().mtu, Some(65535));
        let sock = format!("/{}", "s".repeat(MAX_SOCKET_PATH_LEN - 1));
        assert!(parse(&format!(r#","agentSocket":"{sock}""#)).is_ok());
        let sock = format!("/{}", "s".repeat(MAX_SOCKET_PATH_LEN));
        assert!(parse(&format!(r#","agentSocket":"{sock}""#)).is_err());
    }

    #[test]
    fn too_large_message() {
        let e = too_large(2 << 20);
        assert_eq!(e.code, codes::INVALID_NETWORK_CONFIG);
        assert!(e.msg.contains("2097152 bytes") && e.msg.contains("1048576"));
    }
}
