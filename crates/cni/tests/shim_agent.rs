//! Runs the built weft-cni binary with an environment and stdin, and checks
//! exit code and stdout against a fake agent, which stands in for weftd only
//! to test the shim's request building and result rendering.

mod shim_support;

use shim_support::*;

struct FakeAgent {
    _dir: TmpDir,
    sock: PathBuf,
    requests: mpsc::Receiver<(String, Vec<u8>)>,
}

/// Serves `n` connections, answering each with `reply(path, body)`.
fn fake_agent(name: &str, n: usize, reply: fn(&str, &[u8]) -> (u16, Vec<u8>)) -> FakeAgent {
    let dir = tmpdir(name);
    let sock = dir.join("weftd.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..n {
            let (stream, _) = listener.accept().unwrap();
            let req = weft_api::http::read_request(&stream).unwrap();
            assert_eq!(req.method, "POST");
            let (status, body) = reply(&req.path, &req.body);
            weft_api::http::write_response(&stream, status, &body).unwrap();
            tx.send((req.path, req.body)).unwrap();
        }
    });
    FakeAgent {
        _dir: dir,
        sock,
        requests: rx,
    }
}

fn neutral_result() -> Value {
    json!({
        "interfaces": [
            {"name": "weft5d41402a", "mac": "ee:ee:ee:ee:ee:ee"},
            {"name": "eth0", "mac": "0a:58:0a:f4:00:05", "mtu": 1450, "sandbox": "/var/run/netns/test"}
        ],
        "ips": [
            {"address": "10.244.0.5/32", "gateway": "169.254.1.1", "interface": 1},
            {"address": "fd00::5/128", "gateway": "fe80::1", "interface": 1}
        ],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
            {"dst": "::/0", "gw": "fe80::1"}
        ]
    })
}

fn answer_add(path: &str, _body: &[u8]) -> (u16, Vec<u8>) {
    assert_eq!(path, weft_api::paths::CNI_ADD);
    (200, serde_json::to_vec(&neutral_result()).unwrap())
}

#[test]
fn add_renders_weftds_result_in_the_config_version() {
    let versions = ["0.3.1", "0.4.0", "1.0.0"];
    let agent = fake_agent("add-render", versions.len(), answer_add);
    for v in versions {
        let out = run(
            &attach_env("ADD", &[]),
            &conf(
                v,
                json!({
                    "agentSocket": agent.sock,
                    "mtu": 1450,
                    "ipFamilies": ["ipv4", "ipv6"],
                    "runtimeConfig": {"ips": ["10.244.0.5/24"], "portMappings": []},
                    "args": {"cni": {"ips": ["fd00::5"]}}
                }),
            ),
        );
        assert_eq!(out.code, 0, "{v}: {}", out.stdout);
        let r = out.json();
        assert_eq!(r["cniVersion"], v);
        assert_eq!(
            r["interfaces"][0],
            json!({"name": "weft5d41402a", "mac": "ee:ee:ee:ee:ee:ee"})
        );
        assert_eq!(
            r["interfaces"][1],
            json!({"name": "eth0", "mac": "0a:58:0a:f4:00:05", "sandbox": "/var/run/netns/test"})
        );
        let (ip4, ip6) = (&r["ips"][0], &r["ips"][1]);
        assert_eq!(ip4["address"], "10.244.0.5/32");
        assert_eq!(ip4["gateway"], "169.254.1.1");
        assert_eq!(ip4["interface"], 1);
        assert_eq!(ip6["address"], "fd00::5/128");
        assert_eq!(ip6["gateway"], "fe80::1");
        if v == "1.0.0" {
            assert!(
                ip4.get("version").is_none() && ip6.get("version").is_none(),
                "{r}"
            );
        } else {
            assert_eq!(ip4["version"], "4", "{r}");
            assert_eq!(ip6["version"], "6", "{r}");
        }
        assert_eq!(
            r["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}, {"dst": "::/0", "gw": "fe80::1"}])
        );
        assert!(r.get("dns").is_none());

        let (path, body) = agent.requests.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(path, weft_api::paths::CNI_ADD);
        let req: AddRequest = serde_json::from_slice(&body).unwrap();
        assert_eq!(req.attachment.container_id, "0123456789abcdef");
        assert_eq!(req.attachment.ifname, "eth0");
        assert_eq!(req.netns, "/var/run/netns/test");
        assert_eq!(req.network, "weft");
        assert_eq!(
            (
                req.pod.namespace.as_str(),
                req.pod.name.as_str(),
                req.pod.uid.as_str()
            ),
            ("default", "web-0", "uid-1")
        );
        assert_eq!(req.mtu, Some(1450));
        assert!(req.want_ipv4 && req.want_ipv6);
        assert_eq!(
            req.requested_ips,
            vec![
                "10.244.0.5".parse::<std::net::IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
    }
}

#[test]
fn add_merges_into_prev_result() {
    let agent = fake_agent("add-merge", 1, answer_add);
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "net0", "sandbox": "/var/run/netns/test"}],
        "ips": [{"address": "192.168.1.5/24", "interface": 0}],
        "dns": {"nameservers": ["192.168.1.53"]}
    });
    let out = run(
        &attach_env("ADD", &[]),
        &conf(
            "1.0.0",
            json!({"agentSocket": agent.sock, "prevResult": prev, "ipFamilies": ["ipv4"]}),
        ),
    );
    assert_eq!(out.code, 0, "{}", out.stdout);
    let r = out.json();
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 3);
    assert_eq!(r["ips"][0]["interface"], 0);
    assert_eq!(r["ips"][1]["interface"], 2);
    assert_eq!(r["dns"]["nameservers"][0], "192.168.1.53");
    let (_, body) = agent.requests.recv_timeout(Duration::from_secs(5)).unwrap();
    let req: AddRequest = serde_json::from_slice(&body).unwrap();
    assert!(req.want_ipv4 && !req.want_ipv6);
}

#[test]
fn add_with_malformed_prev_result_never_reaches_the_agent() {
    let (_dir, sock) = no_agent("add-badprev");
    let out = run(
        &attach_env("ADD", &[]),
        &conf(
            "1.0.0",
            json!({"agentSocket": sock, "prevResult": {"ips": [{"address": "nope"}]}}),
        ),
    );
    assert!(out.error(7)["msg"]
        .as_str()
        .unwrap()
        .contains("prevResult.ips[0].address"));
}

fn answer_empty(_path: &str, _body: &[u8]) -> (u16, Vec<u8>) {
    (200, b"{}".to_vec())
}

#[test]
fn other_verbs_print_nothing_on_success() {
    let agent = fake_agent("verbs", 4, answer_empty);
    let sock = agent.sock.display().to_string();
    let prev = json!({"interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/test"}], "ips": [{"address": "10.244.0.5/32", "interface": 0}]});
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<u8>, &'a str);
    let cases: Vec<Case> = vec![
        (
            attach_env("DEL", &[]),
            conf("1.1.0", json!({"agentSocket": sock})),
            weft_api::paths::CNI_DEL,
        ),
        (
            attach_env("CHECK", &[]),
            conf("1.1.0", json!({"agentSocket": sock, "prevResult": prev})),
            weft_api::paths::CNI_CHECK,
        ),
        (
            vec![("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
            conf(
                "1.1.0",
                json!({"agentSocket": sock, "cni.dev/valid-attachments": [{"containerID": "abc", "ifname": "eth0"}]}),
            ),
            weft_api::paths::CNI_GC,
        ),
        (
            vec![("CNI_COMMAND", "STATUS")],
            conf("1.1.0", json!({"agentSocket": sock})),
            weft_api::paths::CNI_STATUS,
        ),
    ];
    for (env, stdin, want_path) in cases {
        let out = run(&env, &stdin);
        assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{want_path}");
        let (path, body) = agent.requests.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(path, want_path);
        match want_path {
            weft_api::paths::CNI_DEL => {
                let r: DelRequest = serde_json::from_slice(&body).unwrap();
                assert_eq!(r.attachment.ifname, "eth0");
            }
            weft_api::paths::CNI_CHECK => {
                let r: CheckRequest = serde_json::from_slice(&body).unwrap();
                assert_eq!(
                    r.prev_result.unwrap().ips[0].address.to_string(),
                    "10.244.0.5/32"
                );
            }
            weft_api::paths::CNI_GC => {
                let r: GcRequest = serde_json::from_slice(&body).unwrap();
                assert_eq!(r.valid_attachments.len(), 1);
                assert_eq!(r.valid_attachments[0].container_id, "abc");
                assert_eq!(r.network, "weft");
            }
            _ => {
                let r: StatusRequest = serde_json::from_slice(&body).unwrap();
                assert_eq!(r.network, "weft");
            }
        }
    }
}

fn answer_error(_path: &str, _body: &[u8]) -> (u16, Vec<u8>) {
    (
        409,
        br#"{"code":101,"msg":"address 10.244.0.5 is taken; pick another or release it"}"#.to_vec(),
    )
}

#[test]
fn agent_errors_are_printed_with_the_config_version() {
    let agent = fake_agent("agent-error", 1, answer_error);
    let out = run(
        &attach_env("ADD", &[]),
        &conf("0.4.0", json!({"agentSocket": agent.sock})),
    );
    let e = out.error(101);
    assert_eq!(e["cniVersion"], "0.4.0");
    assert!(e["msg"].as_str().unwrap().contains("is taken"));
}

fn answer_garbage(_path: &str, _body: &[u8]) -> (u16, Vec<u8>) {
    (500, b"<html>oops</html>".to_vec())
}

fn answer_bad_result(_path: &str, _body: &[u8]) -> (u16, Vec<u8>) {
    (200, br#"{"ips": "nope"}"#.to_vec())
}

#[test]
fn unreadable_agent_bodies_are_code_199_naming_the_socket() {
    for (name, reply) in [
        (
            "garbage",
            answer_garbage as fn(&str, &[u8]) -> (u16, Vec<u8>),
        ),
        ("bad-result", answer_bad_result),
    ] {
        let agent = fake_agent(name, 1, reply);
        let out = run(
            &attach_env("ADD", &[]),
            &conf("1.0.0", json!({"agentSocket": agent.sock})),
        );
        let e = out.error(199);
        assert!(
            e["msg"]
                .as_str()
                .unwrap()
                .contains(&agent.sock.display().to_string()),
            "{e}"
        );
    }
}

#[test]
fn spool_dir_default_is_documented_constant() {
    assert_eq!(weft_api::DEFAULT_SPOOL_DIR, "/var/lib/weft/spool");
    assert!(Path::new(weft_api::DEFAULT_SOCKET).is_absolute());
}

/// Accepts connections and reads the request, then holds the connection
/// open without answering: a wedged weftd.
#[cfg(debug_assertions)]
fn silent_agent(name: &str) -> (TmpDir, PathBuf) {
    let dir = tmpdir(name);
    let sock = dir.join("weftd.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            let _ = weft_api::http::read_request(&stream);
            held.push(stream);
        }
    });
    (dir, sock)
}

#[cfg(debug_assertions)]
#[test]
fn a_silent_agent_hits_the_reply_timeout() {
    let (_dir, sock) = silent_agent("silent-reply");
    let mut env = attach_env("ADD", &[]);
    env.push(("WEFT_CNI_TEST_TIMEOUTS_MS", "300,10000"));
    let start = Instant::now();
    let out = run(&env, &conf("1.0.0", json!({"agentSocket": sock})));
    assert!(start.elapsed() < Duration::from_secs(5));
    let e = out.error(11);
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("failed during the request") && msg.contains(&sock.display().to_string()),
        "{msg}"
    );
    // DEL is not spooled here: weftd got the request and may act on it;
    // the runtime retries.
    let mut env = attach_env("DEL", &[]);
    env.push(("WEFT_CNI_TEST_TIMEOUTS_MS", "300,10000"));
    let spool = sock.parent().unwrap().join("spool");
    let out = run(
        &env,
        &conf("1.0.0", json!({"agentSocket": sock, "spoolDir": spool})),
    );
    out.error(11);
    assert!(!spool.exists());
}

#[cfg(debug_assertions)]
#[test]
fn the_watchdog_bounds_the_whole_exchange() {
    let (_dir, sock) = silent_agent("silent-watchdog");
    let mut env = attach_env("ADD", &[]);
    env.push(("WEFT_CNI_TEST_TIMEOUTS_MS", "20000,300"));
    let start = Instant::now();
    let out = run(&env, &conf("0.4.0", json!({"agentSocket": sock})));
    assert!(start.elapsed() < Duration::from_secs(5));
    let e = out.error(11);
    assert_eq!(e["cniVersion"], "0.4.0");
    let msg = e["msg"].as_str().unwrap();
    assert!(msg.contains("did not answer within 300ms"), "{msg}");
    // Exactly one JSON document on stdout.
    assert_eq!(out.stdout.trim().lines().count(), 1, "{}", out.stdout);
}

/// An agent that takes each connection and closes it before a full answer:
/// after reading the request and writing `partial` (a weftd killed while
/// serving it), or at once without reading (the kernel resets).
fn cut_agent(name: &str, read_first: bool, partial: &'static [u8]) -> (TmpDir, PathBuf) {
    let dir = tmpdir(name);
    let sock = dir.join("weftd.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            if read_first {
                let _ = weft_api::http::read_request(&stream);
                let _ = stream.write_all(partial);
            }
            drop(stream);
        }
    });
    (dir, sock)
}

#[test]
fn a_del_cut_mid_request_is_spooled() {
    for (name, read_first, partial) in [
        ("cut-eof", true, &b""[..]),
        ("cut-half", true, &b"HTTP/1.1 200 OK\r\nContent-Le"[..]),
        (
            "cut-body",
            true,
            &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{"[..],
        ),
        ("cut-reset", false, &b""[..]),
    ] {
        let (dir, sock) = cut_agent(name, read_first, partial);
        let spool = dir.join("spool");
        let out = run(
            &attach_env("DEL", &[]),
            &conf("1.0.0", json!({"agentSocket": sock, "spoolDir": spool})),
        );
        assert_eq!(out.code, 0, "{name}: {}", out.stdout);
        assert_eq!(out.stdout, "", "{name}");
        let file = spool.join("0123456789abcdef-eth0.json");
        let req: DelRequest = serde_json::from_slice(
            &std::fs::read(&file).unwrap_or_else(|e| panic!("{name}: not spooled: {e}")),
        )
        .unwrap();
        assert_eq!(req.netns, "/var/run/netns/test", "{name}");
        // an ADD cut the same way is code 11 for the runtime to retry
        let out = run(
            &attach_env("ADD", &[]),
            &conf("1.0.0", json!({"agentSocket": sock})),
        );
        out.error(11);
    }
}

#[test]
fn static_addresses_of_one_family_twice_are_input_errors() {
    let (_dir, sock) = no_agent("two-v4");
    let out = run(
        &attach_env(
            "ADD",
            &[("CNI_ARGS", "IgnoreUnknown=1;IP=10.0.0.5,10.0.0.6")],
        ),
        &conf("1.0.0", json!({"agentSocket": sock})),
    );
    assert!(out.error(4)["msg"]
        .as_str()
        .unwrap()
        .contains("at most one per family"));
    let out = run(
        &attach_env("ADD", &[]),
        &conf(
            "1.0.0",
            json!({"agentSocket": sock, "runtimeConfig": {"ips": ["10.0.0.5/24", "10.0.0.6/24"]}}),
        ),
    );
    out.error(7);
}
