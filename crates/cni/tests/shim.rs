//! Runs the built weft-cni binary with an environment and stdin, and checks
//! exit code and stdout, with no weftd: input validation, and what the shim
//! does when weftd is away (codes 11 and 50, the DEL spool).

mod shim_support;

use shim_support::*;

#[test]
fn version_in_each_supported_version() {
    for v in VERSIONS {
        let out = run(
            &[("CNI_COMMAND", "VERSION")],
            format!(r#"{{"cniVersion":"{v}"}}"#).as_bytes(),
        );
        assert_eq!(out.code, 0);
        let j = out.json();
        assert_eq!(j["cniVersion"], v);
        assert_eq!(j["supportedVersions"], json!(VERSIONS));
    }
    let huge = vec![b' '; 3 << 20];
    for stdin in [&b""[..], b"garbage", br#"{"cniVersion":"0.2.0"}"#, &huge] {
        let out = run(&[("CNI_COMMAND", "VERSION")], stdin);
        assert_eq!(out.code, 0);
        assert_eq!(out.json()["cniVersion"], "1.1.0");
    }
}

#[test]
fn missing_or_unknown_command_is_code_4() {
    let out = run(&[], b"");
    let e = out.error(4);
    assert!(e["msg"].as_str().unwrap().contains("CNI_COMMAND"));
    assert_eq!(e["cniVersion"], "1.1.0");
    let out = run(&[("CNI_COMMAND", "EXPLODE")], &conf("1.0.0", json!({})));
    let e = out.error(4);
    assert!(e["msg"].as_str().unwrap().contains("EXPLODE"));
    assert_eq!(e["cniVersion"], "1.0.0");
}

#[test]
fn missing_env_names_every_variable() {
    let out = run(&[("CNI_COMMAND", "ADD")], &conf("0.4.0", json!({})));
    let e = out.error(4);
    let msg = e["msg"].as_str().unwrap();
    for v in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
        assert!(msg.contains(v), "{v} missing from {msg}");
    }
    // Errors carry the config's version.
    assert_eq!(e["cniVersion"], "0.4.0");
}

#[test]
fn hostile_ifnames() {
    for bad in [
        "../x",
        "a b",
        "abcdefghijklmnop",
        "eth0/",
        "",
        ".",
        "..",
        "a:b",
    ] {
        let out = run(
            &attach_env("ADD", &[("CNI_IFNAME", bad)]),
            &conf("1.0.0", json!({})),
        );
        let e = out.error(4);
        assert!(
            e["msg"].as_str().unwrap().contains("CNI_IFNAME"),
            "{bad:?}: {e}"
        );
    }
}

#[test]
fn hostile_container_ids() {
    let long = "a".repeat(300);
    for bad in [
        "../../etc/passwd",
        "-rf",
        "a b",
        "a/b",
        ".hidden",
        "x;y",
        long.as_str(),
    ] {
        let out = run(
            &attach_env("DEL", &[("CNI_CONTAINERID", bad)]),
            &conf("1.0.0", json!({})),
        );
        let e = out.error(4);
        assert!(
            e["msg"].as_str().unwrap().contains("CNI_CONTAINERID"),
            "{bad:?}: {e}"
        );
    }
}

#[test]
fn malformed_cni_args_is_code_4() {
    let out = run(
        &attach_env("ADD", &[("CNI_ARGS", "K8S_POD_NAME")]),
        &conf("1.0.0", json!({})),
    );
    assert!(out.error(4)["msg"].as_str().unwrap().contains("CNI_ARGS"));
}

#[test]
fn bad_configs() {
    let env = attach_env("ADD", &[]);
    let out = run(&env, br#"{"cniVersion": "1.0.0", "name": "weft""#);
    out.error(6);
    let out = run(
        &env,
        br#"{"cniVersion":"1.0.0","name":"weft","type":"weft-cni","mtu":"big"}"#,
    );
    let e = out.error(7);
    assert!(e["msg"].as_str().unwrap().contains("mtu"));
    assert_eq!(e["cniVersion"], "1.0.0");
    let out = run(&env, &conf("1.0.0", json!({"mtu": 10})));
    assert!(out.error(7)["msg"].as_str().unwrap().contains("mtu is 10"));
    let out = run(&env, &conf("1.0.0", json!({"name": ""})));
    out.error(7);
    let out = run(&env, &conf("1.0.0", json!({"type": 5})));
    assert!(out.error(7)["msg"].as_str().unwrap().contains("type"));
    for v in ["0.2.0", "9.9.9"] {
        let out = run(&env, &conf(v, json!({})));
        let e = out.error(1);
        assert!(e["details"].as_str().unwrap().contains("1.1.0"));
        assert_eq!(e["cniVersion"], "1.1.0");
    }
}

#[test]
fn oversized_config_is_code_7_with_size() {
    let mut big = br#"{"cniVersion":"1.0.0","name":"weft","type":"weft-cni","pad":""#.to_vec();
    big.resize(2 << 20, b'x');
    big.extend_from_slice(b"\"}");
    let out = run(&attach_env("ADD", &[]), &big);
    let e = out.error(7);
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains(&big.len().to_string()) && msg.contains("1048576"),
        "{msg}"
    );
}

#[test]
fn verb_not_allowed_by_version_is_code_1() {
    let out = run(&attach_env("CHECK", &[]), &conf("0.3.1", json!({})));
    assert!(out.error(1)["msg"].as_str().unwrap().contains("CHECK"));
    let out = run(&[("CNI_COMMAND", "STATUS")], &conf("1.0.0", json!({})));
    out.error(1);
    let out = run(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &conf("1.0.0", json!({})),
    );
    out.error(1);
}

#[test]
fn gc_without_valid_attachments_is_refused() {
    let out = run(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &conf("1.1.0", json!({})),
    );
    assert!(out.error(7)["msg"]
        .as_str()
        .unwrap()
        .contains("valid-attachments"));
}

#[test]
fn add_without_agent_is_code_11_naming_the_socket() {
    let (_dir, sock) = no_agent("add-noagent");
    let out = run(
        &attach_env("ADD", &[]),
        &conf("1.0.0", json!({"agentSocket": sock})),
    );
    let e = out.error(11);
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains(&sock) && msg.contains("systemctl start weftd"),
        "{msg}"
    );
    let out = run(
        &attach_env("CHECK", &[]),
        &conf("1.0.0", json!({"agentSocket": sock})),
    );
    out.error(11);
    let out = run(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        &conf(
            "1.1.0",
            json!({"agentSocket": sock, "cni.dev/valid-attachments": []}),
        ),
    );
    out.error(11);
}

#[test]
fn connection_refused_is_code_11_too() {
    let dir = tmpdir("refused");
    let sock = dir.join("weftd.sock");
    drop(UnixListener::bind(&sock).unwrap()); // socket file left, nobody listening
    let out = run(
        &attach_env("ADD", &[]),
        &conf("1.0.0", json!({"agentSocket": sock})),
    );
    let e = out.error(11);
    assert!(e["msg"].as_str().unwrap().contains("refused"), "{e}");
}

#[test]
fn status_without_agent_is_code_50() {
    let (_dir, sock) = no_agent("status-noagent");
    let out = run(
        &[("CNI_COMMAND", "STATUS")],
        &conf("1.1.0", json!({"agentSocket": sock})),
    );
    let e = out.error(50);
    assert!(e["msg"].as_str().unwrap().contains(&sock));
}

#[test]
fn del_without_agent_is_spooled() {
    let (dir, sock) = no_agent("del-noagent");
    let spool = dir.join("spool/nested");
    let out = run(
        &attach_env("DEL", &[("CNI_NETNS", "")]),
        &conf("1.0.0", json!({"agentSocket": sock, "spoolDir": spool})),
    );
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(out.stdout, "");
    let file = spool.join("0123456789abcdef-eth0.json");
    let req: DelRequest = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(req.attachment.container_id, "0123456789abcdef");
    assert_eq!(req.attachment.ifname, "eth0");
    assert_eq!(req.netns, "");
    assert_eq!(req.network, "weft");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&spool).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // Only the spool file, no temporaries.
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 1);
    // A repeated DEL is fine.
    let out = run(
        &attach_env("DEL", &[]),
        &conf("1.0.0", json!({"agentSocket": sock, "spoolDir": spool})),
    );
    assert_eq!(out.code, 0);
    let req: DelRequest = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(req.netns, "/var/run/netns/test");
}

#[test]
fn del_fails_when_it_cannot_be_spooled() {
    let (dir, sock) = no_agent("del-nospool");
    let blocker = dir.join("file");
    std::fs::write(&blocker, b"not a dir").unwrap();
    let spool = blocker.join("spool");
    let out = run(
        &attach_env("DEL", &[]),
        &conf("1.0.0", json!({"agentSocket": sock, "spoolDir": spool})),
    );
    let e = out.error(11);
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains(&spool.display().to_string()),
        "{e}"
    );
}

#[cfg(debug_assertions)]
#[test]
fn a_panic_still_prints_a_cni_error() {
    let mut env = attach_env("ADD", &[]);
    env.push(("WEFT_CNI_TEST_PANIC", "1"));
    let out = run(&env, &conf("0.4.0", json!({})));
    let e = out.error(199);
    assert!(e["details"].as_str().unwrap().contains("test panic"));
}

#[test]
fn log_file_gets_lines_and_stdout_stays_clean() {
    let (dir, sock) = no_agent("logfile");
    let log = dir.join("cni.log");
    let out = run(
        &attach_env("ADD", &[]),
        &conf(
            "1.0.0",
            json!({"agentSocket": sock, "logFile": log, "logLevel": "debug"}),
        ),
    );
    out.error(11);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("ADD 0123456789abcdef/eth0") && text.contains("code 11"),
        "{text}"
    );
    assert!(text.lines().all(|l| l.starts_with("20")), "{text}");
}

#[test]
fn version_starts_fast() {
    // A loose bound so it is not flaky; the real figure is well under 2 ms
    // for a release build.
    let start = Instant::now();
    for _ in 0..20 {
        let out = run(&[("CNI_COMMAND", "VERSION")], b"{}");
        assert_eq!(out.code, 0);
    }
    let avg = start.elapsed() / 20;
    assert!(avg < Duration::from_millis(100), "{avg:?}");
}

// ---------------------------------------------------------------------------
// Fake agent. It stands in for weftd ONLY to test the shim: that the request
// is built from env + config as documented, and that weftd's NeutralResult is
// rendered in the config's version. It implements none of weftd's logic.
// ---------------------------------------------------------------------------
