//! Every config fixture in tests/fixtures is listed here with what parsing it
//! must give; a fixture without an entry (or an entry without a file) fails.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;
use weft_cni_spec::{
    codes, render_add, render_result, CniVersion, Command, LogLevel, NetConf, NeutralResult,
};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn json(name: &str) -> Value {
    serde_json::from_slice(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// (fixture, expected code, words the message must contain)
const BAD: &[(&str, u32, &[&str])] = &[
    (
        "bad-malformed.json",
        codes::DECODE_FAILURE,
        &["not valid json"],
    ),
    (
        "bad-not-json.json",
        codes::DECODE_FAILURE,
        &["not valid json"],
    ),
    (
        "bad-not-object.json",
        codes::INVALID_NETWORK_CONFIG,
        &["json object", "an array"],
    ),
    (
        "bad-wrong-type-mtu.json",
        codes::INVALID_NETWORK_CONFIG,
        &["mtu", "an integer", "a string"],
    ),
    (
        "bad-wrong-type-name.json",
        codes::INVALID_NETWORK_CONFIG,
        &["name", "a string", "a number"],
    ),
    (
        "bad-wrong-type-cniversion.json",
        codes::INVALID_NETWORK_CONFIG,
        &["cniVersion", "a string"],
    ),
    (
        "bad-wrong-type-ipfamilies.json",
        codes::INVALID_NETWORK_CONFIG,
        &["ipFamilies"],
    ),
    (
        "bad-version-0.2.0.json",
        codes::INCOMPATIBLE_VERSION,
        &["\"0.2.0\"", "1.1.0"],
    ),
    (
        "bad-version-9.9.9.json",
        codes::INCOMPATIBLE_VERSION,
        &["\"9.9.9\"", "0.3.0"],
    ),
    (
        "bad-version-missing.json",
        codes::INVALID_NETWORK_CONFIG,
        &["cniVersion is missing"],
    ),
    (
        "bad-type-missing.json",
        codes::INVALID_NETWORK_CONFIG,
        &["type is missing", "weft-cni"],
    ),
    (
        "bad-mtu-10.json",
        codes::INVALID_NETWORK_CONFIG,
        &["mtu is 10", "68..=65535"],
    ),
    (
        "bad-mtu-huge.json",
        codes::INVALID_NETWORK_CONFIG,
        &["mtu is 65536"],
    ),
    (
        "bad-mtu-negative.json",
        codes::INVALID_NETWORK_CONFIG,
        &["mtu is -1500"],
    ),
    (
        "bad-empty-name.json",
        codes::INVALID_NETWORK_CONFIG,
        &["name is missing or empty"],
    ),
    (
        "bad-name-chars.json",
        codes::INVALID_NETWORK_CONFIG,
        &["name \"../weft\""],
    ),
    (
        "bad-ipfamilies-empty.json",
        codes::INVALID_NETWORK_CONFIG,
        &["ipFamilies is empty"],
    ),
    (
        "bad-ipfamilies-unknown.json",
        codes::INVALID_NETWORK_CONFIG,
        &["ipFamilies[1]", "ipx"],
    ),
    (
        "bad-runtimeconfig-ip.json",
        codes::INVALID_NETWORK_CONFIG,
        &["runtimeConfig.ips[1]", "10.0.0.300"],
    ),
    (
        "bad-runtimeconfig-ip-prefix.json",
        codes::INVALID_NETWORK_CONFIG,
        &["runtimeConfig.ips[0]"],
    ),
    (
        "bad-runtimeconfig-type.json",
        codes::INVALID_NETWORK_CONFIG,
        &["runtimeConfig", "an object"],
    ),
    (
        "bad-args-ips-type.json",
        codes::INVALID_NETWORK_CONFIG,
        &["args.cni.ips", "a list"],
    ),
    (
        "bad-ip-family-excluded.json",
        codes::INVALID_NETWORK_CONFIG,
        &["fd00::5", "ipFamilies excludes ipv6"],
    ),
    (
        "bad-loglevel.json",
        codes::INVALID_NETWORK_CONFIG,
        &["logLevel", "loud"],
    ),
    (
        "bad-logfile-relative.json",
        codes::INVALID_NETWORK_CONFIG,
        &["logFile", "absolute"],
    ),
    (
        "bad-socket-too-long.json",
        codes::INVALID_NETWORK_CONFIG,
        &["agentSocket", "107"],
    ),
    (
        "bad-prevresult-type.json",
        codes::INVALID_NETWORK_CONFIG,
        &["prevResult", "an object"],
    ),
    (
        "bad-valid-attachments-type.json",
        codes::INVALID_NETWORK_CONFIG,
        &["cni.dev/valid-attachments", "a list"],
    ),
    (
        "bad-valid-attachments-entry.json",
        codes::INVALID_NETWORK_CONFIG,
        &["cni.dev/valid-attachments[1].ifname", "missing"],
    ),
];

const OK: &[&str] = &[
    "ok-add-0.3.0.json",
    "ok-add-0.3.1.json",
    "ok-add-0.4.0.json",
    "ok-add-1.0.0.json",
    "ok-add-1.1.0.json",
    "ok-gc-1.1.0.json",
    "ok-gc-alias-1.1.0.json",
    "ok-runtimeconfig-ips.json",
    "ok-args-cni-ips.json",
    "ok-prevresult-0.4.0.json",
    "ok-prevresult-1.0.0.json",
    "ok-unknown-fields.json",
    "ok-type-renamed.json",
];

#[test]
fn every_fixture_is_covered() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = OK
        .iter()
        .copied()
        .chain(BAD.iter().map(|(n, _, _)| *n))
        .map(String::from)
        .collect();
    assert_eq!(on_disk, listed);
}

#[test]
fn bad_fixtures_give_their_code_and_name_the_field() {
    for (name, code, words) in BAD {
        let e = NetConf::parse(&read(name)).expect_err(name);
        assert_eq!(e.code, *code, "{name}: {e:?}");
        for w in *words {
            assert!(e.msg.contains(w), "{name}: {w:?} not in {:?}", e.msg);
        }
        assert!(!e.msg.ends_with('.'), "{name}: {:?}", e.msg);
        assert!(
            e.msg.chars().next().unwrap().is_lowercase()
                || e.msg.starts_with("GC")
                || e.msg.starts_with("CNI"),
            "{name}: {:?}",
            e.msg
        );
    }
}

#[test]
fn ok_fixtures_parse() {
    for name in OK {
        let c = NetConf::parse(&read(name)).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(c.plugin_type, json(name)["type"].as_str().unwrap());
        assert!(!c.name.is_empty());
    }
}

#[test]
fn add_fixture_per_version() {
    for v in CniVersion::ALL {
        let c = NetConf::parse(&read(&format!("ok-add-{v}.json"))).unwrap();
        assert_eq!(c.cni_version, v);
        assert!(c.check_for(Command::Add).is_ok());
        assert!(c.check_for(Command::Del).is_ok());
        assert_eq!(c.check_for(Command::Check).is_ok(), v >= CniVersion::V0_4_0);
        assert_eq!(
            c.check_for(Command::Status).is_ok(),
            v == CniVersion::V1_1_0
        );
        if v == CniVersion::V1_1_0 {
            // No valid-attachments: GC must refuse rather than collect all.
            let e = c.check_for(Command::Gc).unwrap_err();
            assert_eq!(e.code, codes::INVALID_NETWORK_CONFIG);
            assert!(e.msg.contains("cni.dev/valid-attachments"));
        } else {
            assert_eq!(
                c.check_for(Command::Gc).unwrap_err().code,
                codes::INCOMPATIBLE_VERSION
            );
        }
    }
}

#[test]
fn full_config_fields() {
    let c = NetConf::parse(&read("ok-add-1.1.0.json")).unwrap();
    assert_eq!(c.agent_socket.as_deref(), Some("/run/weft/weftd.sock"));
    assert_eq!(c.spool_dir.as_deref(), Some("/var/lib/weft/spool"));
    assert_eq!(c.mtu, Some(1450));
    assert!(c.ip_families.ipv4 && c.ip_families.ipv6);
    assert_eq!(c.log_file.as_deref(), Some("/var/log/weft-cni.log"));
    assert_eq!(c.log_level, LogLevel::Debug);
    assert!(c.runtime_ips.is_empty() && c.args_ips.is_empty());
    assert!(c.prev_result.is_none() && c.valid_attachments.is_none());

    let d = NetConf::parse(&read("ok-add-1.0.0.json")).unwrap();
    assert_eq!(d.agent_socket, None);
    assert_eq!(d.mtu, None);
    assert_eq!(d.log_level, LogLevel::Info);
    assert!(d.ip_families.ipv4 && d.ip_families.ipv6);

    let u = NetConf::parse(&read("ok-unknown-fields.json")).unwrap();
    assert!(!u.ip_families.ipv4 && u.ip_families.ipv6);
    assert_eq!(u.name, "weft.pod-net_1");
}

#[test]
fn any_type_is_accepted_as_the_spec_intends() {
    // a renamed binary or a wrapper (e.g. one that logs, then execs weft-cni)
    let c = NetConf::parse(&read("ok-type-renamed.json")).unwrap();
    assert_eq!(c.plugin_type, "weft-cni-logged");
    let e = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":""}"#).unwrap_err();
    assert_eq!(e.code, codes::INVALID_NETWORK_CONFIG);
}

#[test]
fn gc_attachments() {
    let c = NetConf::parse(&read("ok-gc-1.1.0.json")).unwrap();
    let a = c.valid_attachments.as_ref().unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[1].ifname, "net1");
    assert!(a[0].container_id.starts_with("3f6940ab"));
    assert!(c.check_for(Command::Gc).is_ok());
    let alias = NetConf::parse(&read("ok-gc-alias-1.1.0.json")).unwrap();
    assert_eq!(alias.valid_attachments.unwrap()[0].container_id, "abc");
}

#[test]
fn requested_ips() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let c = NetConf::parse(&read("ok-runtimeconfig-ips.json")).unwrap();
    assert_eq!(c.requested_ips(), vec![ip("10.244.1.7"), ip("fd00::7")]);
    let c = NetConf::parse(&read("ok-args-cni-ips.json")).unwrap();
    assert_eq!(
        c.args_ips,
        vec![ip("10.244.1.8"), ip("fd00::8"), ip("10.244.1.7")]
    );
    // runtimeConfig first, duplicates dropped.
    assert_eq!(
        c.requested_ips(),
        vec![ip("10.244.1.7"), ip("10.244.1.8"), ip("fd00::8")]
    );
}

fn neutral() -> NeutralResult {
    serde_json::from_value(json("golden/neutral.json")).unwrap()
}

#[test]
fn golden_results_per_version() {
    for v in CniVersion::ALL {
        let got = render_result(&neutral(), v);
        let want = json(&format!("golden/result-{v}.json"));
        assert_eq!(
            got,
            want,
            "version {v}:\n{}",
            serde_json::to_string_pretty(&got).unwrap()
        );
        // What we render parses back to what we had (mtu only survives in 1.1.0).
        let mut back = weft_cni_spec::parse_result(&got, "result").unwrap();
        if v != CniVersion::V1_1_0 {
            back.interfaces[1].mtu = Some(1450);
        }
        assert_eq!(back, neutral(), "{v}");
    }
}

#[test]
fn golden_merges_with_prev_result() {
    for (fixture, golden) in [
        ("ok-prevresult-0.4.0.json", "golden/merged-0.4.0.json"),
        ("ok-prevresult-1.0.0.json", "golden/merged-1.0.0.json"),
    ] {
        let c = NetConf::parse(&read(fixture)).unwrap();
        let got = render_add(&neutral(), c.cni_version, c.prev_result.as_ref()).unwrap();
        assert_eq!(
            got,
            json(golden),
            "{fixture}:\n{}",
            serde_json::to_string_pretty(&got).unwrap()
        );
        assert!(c.prev_result_neutral().unwrap().is_some());
    }
}

#[test]
fn merge_converts_prev_ips_to_the_config_version() {
    // A 0.4.0-shaped prevResult under a 1.0.0 config loses "version"; a
    // 1.0.0-shaped one under 0.4.0 gains it.
    let prev04 = json("ok-prevresult-0.4.0.json")["prevResult"].clone();
    let out = render_add(&NeutralResult::default(), CniVersion::V1_0_0, Some(&prev04)).unwrap();
    assert!(out["ips"][0].get("version").is_none());
    assert_eq!(out["cniVersion"], "1.0.0");
    let prev10 = json("ok-prevresult-1.0.0.json")["prevResult"].clone();
    let out = render_add(&NeutralResult::default(), CniVersion::V0_4_0, Some(&prev10)).unwrap();
    assert_eq!(out["ips"][0]["version"], "6");
    assert!(out.get("dns").is_none());
}

#[test]
fn prev_result_parses_in_both_shapes() {
    let c = NetConf::parse(&read("ok-prevresult-0.4.0.json")).unwrap();
    let p = c.prev_result_neutral().unwrap().unwrap();
    assert_eq!(p.interfaces.len(), 2);
    assert_eq!(
        p.interfaces[1].sandbox.as_deref(),
        Some("/var/run/netns/pod")
    );
    assert_eq!(p.ips[0].interface, Some(1));
    assert_eq!(p.ips[0].address.to_string(), "192.168.10.5/24");
    assert_eq!(p.routes[0].gw.unwrap().to_string(), "192.168.10.1");
    let c = NetConf::parse(&read("ok-add-1.0.0.json")).unwrap();
    assert_eq!(c.prev_result_neutral().unwrap(), None);
}

#[test]
fn malformed_prev_results_are_code_7_naming_the_field() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"interfaces":[{"mac":"x"}]}"#,
            "prevResult.interfaces[0].name",
        ),
        (r#"{"interfaces":{}}"#, "prevResult.interfaces"),
        (r#"{"interfaces":[7]}"#, "prevResult.interfaces[0]"),
        (
            r#"{"interfaces":[{"name":"a","mtu":-1}]}"#,
            "prevResult.interfaces[0].mtu",
        ),
        (
            r#"{"interfaces":[{"name":"a","sandbox":1}]}"#,
            "prevResult.interfaces[0].sandbox",
        ),
        (
            r#"{"ips":[{"address":"10.0.0.1"}]}"#,
            "prevResult.ips[0].address",
        ),
        (
            r#"{"ips":[{"address":"10.0.0.1/8","gateway":"x"}]}"#,
            "prevResult.ips[0].gateway",
        ),
        (
            r#"{"ips":[{"address":"10.0.0.1/8","interface":0}]}"#,
            "prevResult.ips[0].interface",
        ),
        (
            r#"{"ips":[{"address":"10.0.0.1/8","interface":"0"}]}"#,
            "prevResult.ips[0].interface",
        ),
        (
            r#"{"ips":[{"version":"6","address":"10.0.0.1/8"}]}"#,
            "prevResult.ips[0].version",
        ),
        (
            r#"{"ips":[{"version":4,"address":"10.0.0.1/8"}]}"#,
            "prevResult.ips[0].version",
        ),
        (
            r#"{"routes":[{"gw":"10.0.0.1"}]}"#,
            "prevResult.routes[0].dst",
        ),
        (
            r#"{"routes":[{"dst":"0.0.0.0/0","gw":"nope"}]}"#,
            "prevResult.routes[0].gw",
        ),
        (r#"{"routes":"x"}"#, "prevResult.routes"),
        (r#"[]"#, "prevResult"),
    ];
    for (raw, field) in cases {
        let v: Value = serde_json::from_str(raw).unwrap();
        let e = weft_cni_spec::parse_result(&v, "prevResult").unwrap_err();
        assert_eq!(e.code, codes::INVALID_NETWORK_CONFIG, "{raw}");
        assert!(
            e.msg.starts_with(&format!("{field} ")),
            "{raw}: {:?}",
            e.msg
        );
        let e = render_add(&neutral(), CniVersion::V1_0_0, Some(&v)).unwrap_err();
        assert_eq!(e.code, codes::INVALID_NETWORK_CONFIG);
        // Through a config, it is caught lazily (DEL must not care).
        if v.is_object() {
            let conf = format!(
                r#"{{"cniVersion":"1.0.0","name":"n","type":"weft-cni","prevResult":{raw}}}"#
            );
            let c = NetConf::parse(conf.as_bytes()).unwrap();
            assert_eq!(
                c.prev_result_neutral().unwrap_err().code,
                codes::INVALID_NETWORK_CONFIG
            );
        }
    }
}

#[test]
fn oversized_config_names_size_and_limit() {
    let mut big = br#"{"cniVersion":"1.0.0","name":"n","type":"weft-cni","pad":""#.to_vec();
    big.resize(2 << 20, b'x');
    big.extend_from_slice(br#""}"#);
    let e = NetConf::parse(&big).unwrap_err();
    assert_eq!(e.code, codes::INVALID_NETWORK_CONFIG);
    assert!(e.msg.contains(&big.len().to_string()), "{}", e.msg);
    assert!(e.msg.contains("1048576"), "{}", e.msg);
    // Exactly at the limit is fine.
    let mut at = br#"{"cniVersion":"1.0.0","name":"n","type":"weft-cni","pad":""#.to_vec();
    at.resize(weft_cni_spec::MAX_CONFIG_BYTES - 2, b'x');
    at.extend_from_slice(br#""}"#);
    assert_eq!(at.len(), weft_cni_spec::MAX_CONFIG_BYTES);
    assert!(NetConf::parse(&at).is_ok());
}

#[test]
fn version_sniffing_for_error_stamping() {
    use weft_cni_spec::version::sniff_cni_version;
    assert_eq!(
        sniff_cni_version(&read("bad-mtu-10.json")),
        Some(CniVersion::V1_0_0)
    );
    assert_eq!(sniff_cni_version(&read("bad-malformed.json")), None);
    assert_eq!(sniff_cni_version(&read("bad-version-9.9.9.json")), None);
}
