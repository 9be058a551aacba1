//! weft never harms its node and never puts one address on two pods, also
//! when weftd is killed half-way through a DEL. The crash tests start weftd
//! with the hidden `--fault-point STEP` flag: the DEL's thread stops at that
//! step (logging `fault point STEP reached`), the test sends SIGKILL, then
//! starts weftd again without the flag and looks at what it made of it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use weft_api::{paths, Attachment, DelRequest};
use weft_lab::Lab;

/// Waits until weftd's log has more than `before` lines containing `needle`.
fn wait_for_log(lab: &Lab, needle: &str, before: usize) -> bool {
    let log = lab.node(0).expect("node").log_path();
    eventually(Duration::from_secs(10), || log_count(&log, needle) > before)
}

fn log_count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// `kill -9` of the lab's weftd; waits until it is gone and the lab knows.
fn kill9(lab: &mut Lab) {
    let pid = lab.weftd_pid.expect("weftd runs");
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(
        eventually(Duration::from_secs(5), || !weft_lab::pid_alive(pid)),
        "weftd {pid} survived SIGKILL"
    );
    lab.stop_weftd().expect("forget the dead weftd");
    wait_gone(pid);
}

/// Waits until every thread of `pid` is gone: its leader turns zombie
/// while another thread may still be in a system call (a veth deletion
/// takes ~20 ms) holding the store's lock; /proc/<pid> goes when the lab
/// reaps it, which the kernel allows only after the last thread.
fn wait_gone(pid: u32) {
    let proc = format!("/proc/{pid}");
    assert!(
        eventually(Duration::from_secs(5), || !Path::new(&proc).exists()),
        "weftd {pid} lingers"
    );
}

/// Restarts the lab's weftd with `--fault-point` set to `point` (or none).
fn restart_with_fault(lab: &mut Lab, point: Option<&str>) {
    if let Some(pid) = lab.weftd_pid {
        lab.stop_weftd().expect("stop weftd");
        wait_gone(pid);
    }
    lab.weftd_args.retain(|a| !a.starts_with("--fault-point"));
    if let Some(p) = point {
        lab.weftd_args.push(format!("--fault-point={p}"));
    }
    if let Err(e) = lab.start_weftd() {
        let log = std::fs::read_to_string(lab.node(0).expect("node").log_path());
        let log = log.unwrap_or_default();
        let tail: Vec<_> = log.lines().rev().take(15).collect();
        panic!("start weftd: {e:#}\n{}", tail.join("\n"));
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

/// Issue 10, item 2: weftd killed after a DEL's release (or right after it
/// marked the endpoint) and a runtime that never retries the DEL. The next
/// start finishes it: interface gone, address free, nothing recorded, and a
/// new pod that gets the address is the only one holding it.
#[test]
fn weftd_killed_mid_del_never_leaves_an_address_on_two_pods_privileged() {
    if !root_or_skip("weftd_killed_mid_del_never_leaves_an_address_on_two_pods_privileged") {
        return;
    }
    let mut lab = lab("kdel", |s| s.quarantine_seconds = 1);
    let conf = lab.net_conf("1.0.0");
    for (n, point) in ["del-marked", "del-released"].into_iter().enumerate() {
        restart_with_fault(&mut lab, Some(point));
        let a = lab.add_pod(&format!("a{n}")).expect("add a");
        let ep = endpoints(&lab)
            .into_iter()
            .find(|e| e.attachment.container_id == a.container_id)
            .expect("a's endpoint");
        let needle = format!("fault point {point} reached");
        let log = lab.node(0).expect("node").log_path();
        let before = log_count(&log, &needle);
        // the runtime's DEL, straight to weftd: no shim, so nothing is
        // spooled and no one ever retries it
        let del = DelRequest {
            attachment: Attachment {
                container_id: a.container_id.clone(),
                ifname: "eth0".into(),
            },
            netns: a.netns.to_string_lossy().into_owned(),
            network: conf["name"].as_str().expect("name").to_string(),
        };
        let body = serde_json::to_vec(&del).expect("encode");
        let socket = lab.socket();
        let pending = std::thread::spawn(move || {
            weft_api::http::call(
                &socket,
                "POST",
                paths::CNI_DEL,
                &body,
                Duration::from_secs(30),
            )
        });
        assert!(wait_for_log(&lab, &needle, before), "{point} never reached");
        kill9(&mut lab);
        assert!(
            pending.join().expect("join").is_err(),
            "no answer from a killed weftd"
        );

        restart_with_fault(&mut lab, None);
        assert!(
            endpoints(&lab)
                .iter()
                .all(|e| e.attachment != del.attachment),
            "{point}: endpoint still recorded"
        );
        assert_ipam_clean(&lab, 0);
        let held: Vec<_> = ipam(&lab).allocations.iter().map(|x| x.address).collect();
        for ip in &a.ips {
            assert!(!held.contains(ip), "{point}: {ip} still held");
        }
        let pod_links = ip_out(&["-n", &netns_name(&a.netns), "-o", "addr", "show"]);
        for ip in &a.ips {
            assert!(
                !pod_links.contains(&ip.to_string()),
                "{point}: the pod still holds {ip}: {pod_links}"
            );
        }
        let node = netns_name(&lab.node_netns);
        assert!(
            !ip_out(&["-n", &node, "link", "show"]).contains(&ep.host_ifname),
            "{point}: host veth left"
        );
        // the address goes to a new pod after its quarantine; it alone holds it
        weft_lab::ip(&["netns", "add", &format!("{}-b{n}", lab.name)]).expect("netns");
        let b_ns = format!("/run/netns/{}-b{n}", lab.name);
        let mut want = conf.clone();
        want["runtimeConfig"] = serde_json::json!({"ips": [format!("{}/32", v4(&a.ips))]});
        assert!(
            eventually(Duration::from_secs(5), || lab
                .cni("ADD", &format!("b{n}"), &b_ns, "b", &want)
                .map(|o| o.success)
                .unwrap_or(false)),
            "{point}: the freed address cannot be had"
        );
        assert_ipam_clean(&lab, 0);
        let del_b = lab
            .cni("DEL", &format!("b{n}"), &b_ns, "b", &conf)
            .expect("del b");
        assert!(del_b.success, "{del_b:?}");
        weft_lab::ip(&["netns", "del", &format!("{}-b{n}", lab.name)]).expect("netns del");
    }
}

/// Issue 10, item 3: a DEL whose weftd is killed while serving it is
/// spooled by weft-cni (success for the runtime) and finished by the next
/// weftd.
#[test]
fn a_del_cut_by_kill_9_is_spooled_and_finished_privileged() {
    if !root_or_skip("a_del_cut_by_kill_9_is_spooled_and_finished_privileged") {
        return;
    }
    let mut lab = lab("kspl", |s| {
        s.weftd_args.push("--fault-point=del-released".into())
    });
    let a = lab.add_pod("a").expect("add a");
    let conf = lab.net_conf("1.0.0");
    let netns = a.netns.to_string_lossy().into_owned();
    let needle = "fault point del-released reached";
    let del = std::thread::scope(|s| {
        let lab_ref = &lab;
        let del = s.spawn(|| lab_ref.cni("DEL", &a.container_id, &netns, "a", &conf));
        assert!(
            wait_for_log(lab_ref, needle, 0),
            "fault point never reached"
        );
        let pid = lab_ref.weftd_pid.expect("weftd runs");
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill runs");
        del.join().expect("join").expect("weft-cni runs")
    });
    assert!(
        del.success,
        "DEL cut by a killed weftd must be spooled: {del:?}"
    );
    let spooled: Vec<_> = std::fs::read_dir(lab.spool_dir())
        .expect("spool dir")
        .flatten()
        .collect();
    assert_eq!(spooled.len(), 1, "one spooled DEL");
    kill9(&mut lab);
    restart_with_fault(&mut lab, None);
    assert_eq!(
        std::fs::read_dir(lab.spool_dir()).expect("spool").count(),
        0,
        "spool replayed"
    );
    assert!(endpoints(&lab).is_empty());
    assert!(ipam(&lab).allocations.is_empty());
    assert_ipam_clean(&lab, 0);
    assert!(!ip_out(&["-n", &netns_name(&a.netns), "link", "show"]).contains("eth0"));
}

/// Issue 10, items 1 and 7: the namespace weftd runs in, by any path, is
/// refused with code 4 and the node keeps its routes; a path that is not a
/// namespace is named for what it is. (The host's own netns, /proc/1/ns/net,
/// is refused the same way; the unit tests prove that without ever aiming
/// an ADD at the host.)
#[test]
fn the_nodes_own_netns_is_never_a_pods_privileged() {
    if !root_or_skip("the_nodes_own_netns_is_never_a_pods_privileged") {
        return;
    }
    let lab = lab("nodens", |_| {});
    let conf = lab.net_conf("1.0.0");
    let node = netns_name(&lab.node_netns);
    let routes =
        || ip_out(&["-n", &node, "route", "show"]) + &ip_out(&["-n", &node, "-6", "route", "show"]);
    let before = routes();
    assert!(
        before.contains("default"),
        "the lab node has default routes: {before}"
    );
    let pid = lab.weftd_pid.expect("weftd runs");
    let node_ns = lab.node_netns.to_string_lossy().into_owned();
    for path in [
        node_ns,
        format!("/proc/{pid}/ns/net"),
        format!("/proc/{pid}/task/{pid}/ns/net"),
    ] {
        let out = lab.cni("ADD", "cnode", &path, "n", &conf).expect("runs");
        assert!(!out.success, "{path}: accepted");
        let err = out.json().expect("json");
        assert_eq!(err["code"], 4, "{path}: {err}");
        let msg = err["msg"].as_str().unwrap_or_default();
        assert!(msg.contains("node's own"), "{path}: {msg}");
        let del = lab.cni("DEL", "cnode", &path, "n", &conf).expect("runs");
        assert!(del.success, "{path}: {del:?}");
        assert_eq!(routes(), before, "{path}: the node's routes changed");
    }
    assert!(!ip_out(&["-n", &node, "link", "show"]).contains("eth0"));
    let out = lab
        .cni("ADD", "czero", "/dev/zero", "z", &conf)
        .expect("runs");
    let err = out.json().expect("json");
    assert_eq!(err["code"], 4, "{err}");
    assert!(
        err["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("/dev/zero is a character device"),
        "{err}"
    );
    assert!(endpoints(&lab).is_empty());
    assert!(ipam(&lab).allocations.is_empty(), "nothing allocated");
}

/// Issue 10, item 6: the state directory and its stores are private, and a
/// weftd that finds them open makes them private again at start.
#[test]
fn state_files_are_private_and_fixed_at_start_privileged() {
    if !root_or_skip("state_files_are_private_and_fixed_at_start_privileged") {
        return;
    }
    let mut lab = lab("perm", |_| {});
    lab.add_pod("a").expect("add a");
    let state = lab.node(0).expect("node").state_dir();
    let files = [state.join("endpoints.db"), state.join("ipam.db")];
    assert_eq!(mode(&state), 0o700);
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    let pid = lab.weftd_pid.expect("weftd runs");
    lab.stop_weftd().expect("stop");
    wait_gone(pid);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for f in &files {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let started = Instant::now();
    lab.start_weftd().expect("start");
    assert_eq!(mode(&state), 0o700);
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    let log = lab.node(0).expect("node").log_path();
    assert!(
        log_count(&log, "made it private") >= 3,
        "each fix is logged"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

/// Issue 10, item 5: CNI GCs with a list that names none of them, racing
/// ADDs (bounded: 12 ADDs on 4 threads, GCs for at most 20 s): every ADD
/// that succeeded keeps its attachment, in flight or fresh.
#[test]
fn gc_racing_adds_collects_none_of_them_privileged() {
    if !root_or_skip("gc_racing_adds_collects_none_of_them_privileged") {
        return;
    }
    let lab = lab("gcrace", |_| {});
    let conf = lab.net_conf("1.1.0");
    let mut gc_conf = conf.clone();
    gc_conf["cni.dev/valid-attachments"] = serde_json::json!([]);
    let names: Vec<String> = (0..12).map(|i| format!("{}-g{i}", lab.name)).collect();
    for n in &names {
        weft_lab::ip(&["netns", "add", n]).expect("netns");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = std::sync::atomic::AtomicBool::new(false);
    let (added, gcs) = std::thread::scope(|s| {
        let gc = s.spawn(|| {
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                let out = lab.cni("GC", "", "", "", &gc_conf).expect("gc runs");
                assert!(out.success, "{out:?}");
                n += 1;
            }
            n
        });
        let adders: Vec<_> = names
            .chunks(3)
            .map(|chunk| {
                let (lab, conf) = (&lab, &conf);
                s.spawn(move || {
                    for (i, n) in chunk.iter().enumerate() {
                        let out = lab
                            .cni("ADD", n, &format!("/run/netns/{n}"), &format!("p{i}"), conf)
                            .expect("add runs");
                        assert!(out.success, "{n}: {out:?}");
                    }
                })
            })
            .collect();
        for a in adders {
            a.join().expect("adder");
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (names.len(), gc.join().expect("gc"))
    });
    assert!(gcs > 0, "no GC ran");
    let eps = endpoints(&lab);
    for n in &names {
        assert!(
            eps.iter().any(|e| &e.attachment.container_id == n),
            "{n} collected by a GC racing its ADD ({gcs} GCs)"
        );
    }
    assert_eq!(eps.len(), added);
    assert_ipam_clean(&lab, 0);
}
