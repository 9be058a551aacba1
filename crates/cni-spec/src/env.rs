//! The CNI environment (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`,
//! `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH`), parsed from a lookup function so it
//! is testable without touching the process environment.
//!
//! Which variables each verb needs follows the spec and libcni's `skel`:
//!
//! | verb    | CONTAINERID | NETNS | IFNAME | PATH |
//! |---------|-------------|-------|--------|------|
//! | ADD     | required    | req.  | req.   | req. |
//! | DEL     | required    | may be empty | req. | req. |
//! | CHECK   | required    | req.  | req.   | req. |
//! | GC      | -           | -     | -      | req. (SPEC 1.1 "Required environment parameters: CNI_COMMAND, CNI_PATH") |
//! | STATUS  | -           | -     | -      | optional |
//! | VERSION | -           | -     | -      | -    |
//!
//! As in libcni, a variable set to the empty string counts as missing.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::error::{codes, CniError};
use crate::version::CniVersion;

/// The CNI verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub const ALL: [Command; 6] = [
        Command::Add,
        Command::Del,
        Command::Check,
        Command::Gc,
        Command::Status,
        Command::Version,
    ];

    /// Exact, case-sensitive, as the spec spells them.
    pub fn parse(s: &str) -> Option<Command> {
        Command::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }

    /// The oldest config version that may ask for this verb.
    pub fn min_version(self) -> CniVersion {
        match self {
            Command::Add | Command::Del | Command::Version => CniVersion::V0_3_0,
            Command::Check => CniVersion::V0_4_0,
            Command::Gc | Command::Status => CniVersion::V1_1_0,
        }
    }

    /// Whether the verb concerns one attachment (container id + ifname).
    pub fn is_attachment_verb(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }

    fn needs_netns(self) -> bool {
        matches!(self, Command::Add | Command::Check)
    }

    fn needs_path(self) -> bool {
        matches!(
            self,
            Command::Add | Command::Del | Command::Check | Command::Gc
        )
    }
}

/// weft's own cap on container ids (the spec sets none; containerd, CRI-O
/// and Docker use 64 hex digits). Keeps spool file names under NAME_MAX.
pub const MAX_CONTAINER_ID_LEN: usize = 200;
/// The interface-name rule lives in [`crate::ifname`]; re-exported here for
/// existing callers.
pub use crate::ifname::{validate_ifname, MAX_IFNAME_LEN};

/// `CNI_ARGS`: `K=V;K=V`, kept in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pub pairs: Vec<(String, String)>,
    /// `IgnoreUnknown=1|true`. weft-cni ignores keys it does not know either
    /// way; the flag is recorded for completeness.
    pub ignore_unknown: bool,
}

impl CniArgs {
    /// Parses `CNI_ARGS`. Empty means no pairs. Every `;`-separated segment
    /// must be exactly `KEY=VALUE` with a non-empty key (as libcni demands);
    /// anything else is code 4.
    pub fn parse(raw: &str) -> Result<CniArgs, CniError> {
        let mut args = CniArgs::default();
        if raw.is_empty() {
            return Ok(args);
        }
        for (i, segment) in raw.split(';').enumerate() {
            let mut kv = segment.split('=');
            let (k, v) = match (kv.next(), kv.next(), kv.next()) {
                (Some(k), Some(v), None) if !k.is_empty() => (k, v),
                _ => {
                    return Err(CniError::new(
                        codes::INVALID_ENV,
                        format!(
                            "CNI_ARGS is malformed: segment {} {:?} is not KEY=VALUE; the container runtime must pass CNI_ARGS as KEY=VALUE pairs separated by ';'",
                            i + 1,
                            shorten(segment)
                        ),
                    ))
                }
            };
            if k == "IgnoreUnknown" {
                args.ignore_unknown = match v.to_ascii_lowercase().as_str() {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => {
                        return Err(CniError::new(
                            codes::INVALID_ENV,
                            format!(
                            "CNI_ARGS IgnoreUnknown={:?} is not a boolean; use 1, true, 0 or false",
                            shorten(v)
                        ),
                        ))
                    }
                };
            }
            args.pairs.push((k.to_string(), v.to_string()));
        }
        Ok(args)
    }

    /// The last value given for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `K8S_POD_NAMESPACE` (empty when absent).
    pub fn k8s_pod_namespace(&self) -> &str {
        self.get("K8S_POD_NAMESPACE").unwrap_or_default()
    }

    /// `K8S_POD_NAME` (empty when absent).
    pub fn k8s_pod_name(&self) -> &str {
        self.get("K8S_POD_NAME").unwrap_or_default()
    }

    /// `K8S_POD_UID` (empty when absent).
    pub fn k8s_pod_uid(&self) -> &str {
        self.get("K8S_POD_UID").unwrap_or_default()
    }

    /// `IP`: static addresses, comma-separated, each with or without a
    /// prefix length (the reference host-local's convention). podman sends
    /// `podman run --ip` this way, and on `podman network reload` asks an
    /// IPv4-only network for the container's old address this way. Empty
    /// when absent; code 4 naming the value when it is not an address, or
    /// when it names two addresses of one family.
    pub fn ips(&self) -> Result<Vec<IpAddr>, CniError> {
        let Some(raw) = self.get("IP").filter(|v| !v.is_empty()) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in raw.split(',').map(str::trim) {
            let addr = item
                .split_once('/')
                .map_or(item, |(a, _)| a)
                .parse::<IpAddr>()
                .map_err(|_| {
                    CniError::new(
                        codes::INVALID_ENV,
                        format!(
                            "CNI_ARGS IP={:?} is not a list of ip addresses; give IP=10.0.0.5 or IP=10.0.0.5,fd00::5",
                            shorten(raw)
                        ),
                    )
                })?;
            if out.contains(&addr) {
                continue;
            }
            if let Some(other) = out.iter().find(|o: &&IpAddr| o.is_ipv4() == addr.is_ipv4()) {
                let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
                return Err(CniError::new(
                    codes::INVALID_ENV,
                    format!(
                        "CNI_ARGS IP={:?} names two {family} addresses ({other} and {addr}); a pod gets at most one per family: give IP=10.0.0.5 or IP=10.0.0.5,fd00::5",
                        shorten(raw)
                    ),
                ));
            }
            out.push(addr);
        }
        Ok(out)
    }
}

/// The parsed, validated CNI environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    /// Empty for GC, STATUS and VERSION.
    pub container_id: String,
    /// Empty for DEL when the runtime no longer has the namespace, and for
    /// GC, STATUS and VERSION.
    pub netns: String,
    /// Empty for GC, STATUS and VERSION.
    pub ifname: String,
    pub args: CniArgs,
    /// `CNI_PATH` split on ':' (weft-cni delegates to nothing; kept for
    /// completeness).
    pub path: Vec<String>,
}

impl CniEnv {
    /// Reads and validates the CNI variables through `lookup`. Every missing
    /// or invalid variable is named in one code-4 error.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<CniEnv, CniError> {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let command = match get("CNI_COMMAND") {
            None => {
                return Err(CniError::new(
                    codes::INVALID_ENV,
                    "CNI_COMMAND is not set; weft-cni is a CNI plugin and must be run by a container runtime (CNI_COMMAND=VERSION shows what it supports)",
                ))
            }
            Some(c) => Command::parse(&c).ok_or_else(|| {
                CniError::new(
                    codes::INVALID_ENV,
                    format!(
                        "CNI_COMMAND {:?} is not a CNI verb; use one of ADD, DEL, CHECK, GC, STATUS, VERSION",
                        shorten(&c)
                    ),
                )
            })?,
        };

        let mut problems: Vec<(&'static str, String)> = Vec::new();
        let mut env = CniEnv {
            command,
            container_id: String::new(),
            netns: String::new(),
            ifname: String::new(),
            args: CniArgs::default(),
            path: Vec::new(),
        };
        if command == Command::Version {
            return Ok(env);
        }

        if command.is_attachment_verb() {
            match get("CNI_CONTAINERID") {
                None => problems.push(("CNI_CONTAINERID", "is missing".into())),
                Some(id) => match validate_container_id(&id) {
                    Ok(()) => env.container_id = id,
                    Err(why) => {
                        problems.push(("CNI_CONTAINERID", format!("{:?} {why}", shorten(&id))))
                    }
                },
            }
            match get("CNI_NETNS") {
                None if command.needs_netns() => problems.push(("CNI_NETNS", "is missing".into())),
                None => {}
                Some(ns) if !ns.starts_with('/') => problems.push((
                    "CNI_NETNS",
                    format!("{:?} is not an absolute path", shorten(&ns)),
                )),
                Some(ns) => env.netns = ns,
            }
            match get("CNI_IFNAME") {
                None => problems.push(("CNI_IFNAME", "is missing".into())),
                Some(ifname) => match validate_ifname(&ifname) {
                    Ok(()) => env.ifname = ifname,
                    Err(why) => {
                        problems.push(("CNI_IFNAME", format!("{:?} {why}", shorten(&ifname))))
                    }
                },
            }
        }
        match get("CNI_PATH") {
            None if command.needs_path() => problems.push(("CNI_PATH", "is missing".into())),
            None => {}
            Some(p) => {
                env.path = p
                    .split(':')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }
        }
        match get("CNI_ARGS").map(|a| CniArgs::parse(&a)) {
            None => {}
            Some(Ok(args)) => env.args = args,
            Some(Err(e)) => problems.push((
                "CNI_ARGS",
                e.msg.trim_start_matches("CNI_ARGS ").to_string(),
            )),
        }

        if problems.is_empty() {
            return Ok(env);
        }
        let names: Vec<&str> = problems.iter().map(|(n, _)| *n).collect();
        let reasons: Vec<String> = problems
            .iter()
            .map(|(n, why)| format!("{n} {why}"))
            .collect();
        Err(CniError::new(
            codes::INVALID_ENV,
            format!(
                "invalid CNI environment for {}: {}; the container runtime must set these (check its CNI setup)",
                command.as_str(),
                reasons.join(", ")
            ),
        )
        .with_details(format!("offending variables: {}", names.join(", "))))
    }

    /// Same as [`CniEnv::from_lookup`] over a map.
    pub fn from_map(map: &HashMap<String, String>) -> Result<CniEnv, CniError> {
        CniEnv::from_lookup(&|k| map.get(k).cloned())
    }
}

/// Spec: must not be empty, must start with an alphanumeric character,
/// then alphanumerics, '_', '.' or '-' (`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`).
/// weft also caps the length at [`MAX_CONTAINER_ID_LEN`].
pub fn validate_container_id(id: &str) -> Result<(), String> {
    let bytes = id.as_bytes();
    match bytes.first() {
        None => return Err("is empty".into()),
        Some(b) if !b.is_ascii_alphanumeric() => {
            return Err("must start with a letter or digit".into())
        }
        _ => {}
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "contains {c:?}; only letters, digits, '_', '.' and '-' are allowed"
        ));
    }
    if bytes.len() > MAX_CONTAINER_ID_LEN {
        return Err(format!(
            "is {} bytes, longer than weft's limit of {MAX_CONTAINER_ID_LEN}",
            bytes.len()
        ));
    }
    Ok(())
}

/// Hostile values are echoed in messages; keep them short.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        return s.to_string();
    }
    let mut out: String = s.chars().take(MAX).collect();
    out.push_str("...");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interop (podman 4, CNI backend): `podman run --ip A` and `podman
    /// network reload` of a one-family network pass the static address as
    /// CNI_ARGS `IP=A`, not as runtimeConfig.ips.
    #[test]
    fn ip_arg_is_a_static_request() {
        let a = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAME=s1;IP=10.244.0.50").unwrap();
        assert_eq!(
            a.ips().unwrap(),
            vec!["10.244.0.50".parse::<IpAddr>().unwrap()]
        );
        let a = CniArgs::parse("IP=10.0.0.5/24, fd00::5,10.0.0.5").unwrap();
        assert_eq!(
            a.ips().unwrap(),
            vec![
                "10.0.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse::<IpAddr>().unwrap()
            ]
        );
        assert!(CniArgs::parse("K8S_POD_NAME=x")
            .unwrap()
            .ips()
            .unwrap()
            .is_empty());
        assert!(CniArgs::parse("IP=").unwrap().ips().unwrap().is_empty());
        let e = CniArgs::parse("IP=10.0.0.300").unwrap().ips().unwrap_err();
        assert_eq!(e.code, codes::INVALID_ENV);
        assert!(e.msg.contains("IP=\"10.0.0.300\""), "{}", e.msg);
    }

    /// Two addresses of one family are the caller's mistake (code 4), not
    /// weft's (it was 199, from deep in IPAM).
    #[test]
    fn two_addresses_of_one_family_are_an_input_error() {
        for raw in ["IP=10.0.0.5,10.0.0.6", "IP=fd00::5,10.0.0.5,fd00::6"] {
            let e = CniArgs::parse(raw).unwrap().ips().unwrap_err();
            assert_eq!(e.code, codes::INVALID_ENV, "{raw}");
            assert!(e.msg.contains("at most one per family"), "{}", e.msg);
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Result<CniEnv, CniError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CniEnv::from_map(&map)
    }

    const GOOD: [(&str, &str); 6] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=1234-5678",
        ),
    ];

    fn with(
        cmd: &str,
        over: &[(&'static str, &'static str)],
        drop: &[&str],
    ) -> Result<CniEnv, CniError> {
        let mut pairs: Vec<(&str, &str)> = GOOD
            .iter()
            .copied()
            .filter(|(k, _)| !drop.contains(k) && !over.iter().any(|(o, _)| o == k))
            .collect();
        pairs.retain(|(k, _)| *k != "CNI_COMMAND");
        pairs.push(("CNI_COMMAND", cmd));
        pairs.extend_from_slice(over);
        env(&pairs)
    }

    #[test]
    fn good_add() {
        let e = with("ADD", &[], &[]).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.container_id, "abc123");
        assert_eq!(e.netns, "/var/run/netns/x");
        assert_eq!(e.ifname, "eth0");
        assert_eq!(e.path, vec!["/opt/cni/bin", "/usr/lib/cni"]);
        assert!(e.args.ignore_unknown);
        assert_eq!(e.args.k8s_pod_namespace(), "default");
        assert_eq!(e.args.k8s_pod_name(), "web-0");
        assert_eq!(e.args.k8s_pod_uid(), "1234-5678");
        assert_eq!(e.args.pairs.len(), 5);
        assert_eq!(e.args.pairs[0], ("IgnoreUnknown".into(), "1".into()));
    }

    #[test]
    fn commands() {
        for c in Command::ALL {
            assert_eq!(Command::parse(c.as_str()), Some(c));
        }
        for bad in ["add", "Add", "GET", "", "ADD ", "DELETE"] {
            assert_eq!(Command::parse(bad), None);
        }
    }

    #[test]
    fn missing_and_unknown_command_are_code_4() {
        let e = env(&[]).unwrap_err();
        assert_eq!(e.code, codes::INVALID_ENV);
        assert!(e.msg.contains("CNI_COMMAND"));
        let e = env(&[("CNI_COMMAND", "")]).unwrap_err();
        assert!(e.msg.contains("CNI_COMMAND is not set"));
        let e = env(&[("CNI_COMMAND", "FROB")]).unwrap_err();
        assert_eq!(e.code, codes::INVALID_ENV);
        assert!(
            e.msg.contains("\"FROB\"") && e.msg.contains("ADD, DEL"),
            "{e:?}"
        );
    }

    #[test]
    fn version_needs_nothing_else() {
        let e = env(&[("CNI_COMMAND", "VERSION"), ("CNI_IFNAME", "../../x")]).unwrap();
        assert_eq!(e.command, Command::Version);
    }

    #[test]
    fn every_missing_variable_is_named() {
        let e = env(&[("CNI_COMMAND", "ADD")]).unwrap_err();
        assert_eq!(e.code, codes::INVALID_ENV);
        for v in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
            assert!(e.msg.contains(v), "{v} not in {e:?}");
            assert!(e.details.contains(v));
        }
        assert!(!e.msg.contains("CNI_ARGS"));
        let e = env(&[("CNI_COMMAND", "CHECK")]).unwrap_err();
        assert!(e.msg.contains("CNI_NETNS"));
        let e = env(&[("CNI_COMMAND", "DEL")]).unwrap_err();
        assert!(
            !e.msg.contains("CNI_NETNS"),
            "DEL may omit the netns: {e:?}"
        );
        assert!(e.msg.contains("CNI_CONTAINERID") && e.msg.contains("CNI_IFNAME"));
    }

    #[test]
    fn del_with_empty_netns_is_fine() {
        let e = with("DEL", &[("CNI_NETNS", "")], &[]).unwrap();
        assert_eq!(e.netns, "");
        let e = with("DEL", &[], &["CNI_NETNS"]).unwrap();
        assert_eq!(e.netns, "");
    }

    #[test]
    fn gc_and_status() {
        let e = env(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")]).unwrap();
        assert_eq!(e.command, Command::Gc);
        assert!(e.container_id.is_empty());
        let e = env(&[("CNI_COMMAND", "GC")]).unwrap_err();
        assert!(e.msg.contains("CNI_PATH"));
        let e = env(&[("CNI_COMMAND", "STATUS")]).unwrap();
        assert_eq!(e.command, Command::Status);
        // GC/STATUS ignore attachment variables, even hostile ones.
        assert!(env(&[
            ("CNI_COMMAND", "STATUS"),
            ("CNI_IFNAME", "a b"),
            ("CNI_CONTAINERID", "-x")
        ])
        .is_ok());
    }

    #[test]
    fn hostile_ifnames() {
        for bad in [
            "../x",
            "a b",
            "abcdefghijklmnop",
            "eth0/",
            ".",
            "..",
            "a:b",
            "a\tb",
            "a\nb",
            "a\u{1}b",
            "\u{FFFD}",
            "a\u{00a0}b",
        ] {
            let e = with("ADD", &[("CNI_IFNAME", bad)], &[]).unwrap_err();
            assert_eq!(e.code, codes::INVALID_ENV, "{bad:?}");
            assert!(e.msg.contains("CNI_IFNAME"), "{bad:?}: {e:?}");
            assert!(!e.msg.contains("CNI_CONTAINERID"));
        }
        let e = with("ADD", &[("CNI_IFNAME", "")], &[]).unwrap_err();
        assert!(e.msg.contains("CNI_IFNAME is missing"));
        for good in [
            "eth0",
            "e",
            "abcdefghijklmno",
            "net1.100",
            "veth-x_y",
            "éth0",
        ] {
            assert!(validate_ifname(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn hostile_container_ids() {
        let long = "a".repeat(MAX_CONTAINER_ID_LEN + 1);
        for bad in [
            "-abc",
            "_abc",
            ".abc",
            "../etc",
            "a/b",
            "a b",
            "a:b",
            "a\u{0}b",
            "ä",
            long.as_str(),
        ] {
            let bad: &'static str = Box::leak(bad.to_string().into_boxed_str());
            let e = with("DEL", &[("CNI_CONTAINERID", bad)], &[]).unwrap_err();
            assert_eq!(e.code, codes::INVALID_ENV, "{bad:?}");
            assert!(e.msg.contains("CNI_CONTAINERID"), "{bad:?}: {e:?}");
        }
        for good in [
            "a",
            "0",
            "abc-DEF_1.2",
            &"f".repeat(64),
            &"a".repeat(MAX_CONTAINER_ID_LEN),
        ] {
            assert!(validate_container_id(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn relative_netns_is_refused() {
        let e = with("ADD", &[("CNI_NETNS", "netns/x")], &[]).unwrap_err();
        assert!(
            e.msg.contains("CNI_NETNS") && e.msg.contains("absolute"),
            "{e:?}"
        );
    }

    #[test]
    fn several_problems_in_one_message() {
        let e = with(
            "ADD",
            &[
                ("CNI_IFNAME", "a b"),
                ("CNI_CONTAINERID", "../x"),
                ("CNI_ARGS", "junk"),
            ],
            &["CNI_PATH"],
        )
        .unwrap_err();
        for v in ["CNI_IFNAME", "CNI_CONTAINERID", "CNI_ARGS", "CNI_PATH"] {
            assert!(e.msg.contains(v), "{v}: {e:?}");
        }
        assert!(!e.msg.contains("CNI_NETNS"));
        assert!(e.msg.starts_with("invalid CNI environment for ADD"));
        assert!(!e.msg.ends_with('.'));
    }

    #[test]
    fn cni_args_parsing() {
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        let a = CniArgs::parse("A=1;B=;A=2").unwrap();
        assert_eq!(a.get("A"), Some("2"));
        assert_eq!(a.get("B"), Some(""));
        assert_eq!(a.get("C"), None);
        assert_eq!(a.k8s_pod_name(), "");
        for t in [
            "IgnoreUnknown=true",
            "IgnoreUnknown=TRUE",
            "IgnoreUnknown=1",
        ] {
            assert!(CniArgs::parse(t).unwrap().ignore_unknown, "{t}");
        }
        assert!(!CniArgs::parse("IgnoreUnknown=0").unwrap().ignore_unknown);
        assert!(
            !CniArgs::parse("IgnoreUnknown=false")
                .unwrap()
                .ignore_unknown
        );
        for bad in [
            "junk",
            "A=1;",
            ";A=1",
            "A=1;;B=2",
            "=1",
            "A=1=2",
            "IgnoreUnknown=yes",
            "IgnoreUnknown=",
        ] {
            let e = CniArgs::parse(bad).unwrap_err();
            assert_eq!(e.code, codes::INVALID_ENV, "{bad:?}");
            assert!(e.msg.contains("CNI_ARGS"), "{e:?}");
        }
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let long = format!("a b{}", "x".repeat(5000));
        let e = with(
            "ADD",
            &[("CNI_IFNAME", Box::leak(long.into_boxed_str()))],
            &[],
        )
        .unwrap_err();
        assert!(e.msg.len() < 400, "{}", e.msg.len());
    }

    #[test]
    fn min_versions() {
        assert_eq!(Command::Check.min_version(), CniVersion::V0_4_0);
        assert_eq!(Command::Gc.min_version(), CniVersion::V1_1_0);
        assert_eq!(Command::Status.min_version(), CniVersion::V1_1_0);
        assert_eq!(Command::Add.min_version(), CniVersion::V0_3_0);
    }
}
