use super::*;

fn lab_of(spec: &LabSpec, shared_store: bool, pass_node_ip: bool) -> Lab {
    let dir = Lab::dir_of(&spec.name);
    let nodes: Vec<NodeInfo> = (0..spec.nodes)
        .map(|i| {
            let name = if spec.is_classic() {
                format!("{}-node", spec.name)
            } else {
                format!("{}-n{}", spec.name, i + 1)
            };
            let (underlay_v4, underlay_v6) = node_underlay(i);
            let d = if i == 0 {
                dir.clone()
            } else {
                dir.join(format!("n{}", i + 1))
            };
            NodeInfo {
                netns: netns_path(&name),
                name,
                socket: d.join("weftd.sock"),
                dir: d,
                underlay_v4,
                underlay_v6,
                weftd_pid: None,
            }
        })
        .collect();
    Lab {
        name: spec.name.clone(),
        dir: dir.clone(),
        bin_dir: spec.bin_dir.clone(),
        fabric_netns: netns_path("x-fab"),
        node_netns: nodes[0].netns.clone(),
        node_underlay_v4: nodes[0].underlay_v4,
        node_underlay_v6: nodes[0].underlay_v6,
        fabric_v4: FABRIC_V4.parse().unwrap(),
        fabric_v6: FABRIC_V6.parse().unwrap(),
        weftd_pid: None,
        weftd_args: vec!["--quarantine-seconds=30".into()],
        pods: Vec::new(),
        nodes,
        etcd: (0..spec.etcd_members)
            .map(|i| EtcdMember {
                name: format!("e{}", i + 1),
                address: etcd_address(i),
                data_dir: dir.join("etcd"),
                log: dir.join("etcd.log"),
                pid: None,
            })
            .collect(),
        routing: spec.routing.clone(),
        shared_store,
        pass_node_ip,
        kube_store: false,
        kube: None,
    }
}

#[test]
fn a_one_node_lab_runs_weftd_with_the_flags_it_always_had() {
    let spec = LabSpec::new("p", Path::new("/b"));
    assert!(spec.is_classic());
    let lab = lab_of(&spec, false, false);
    assert_eq!(
        lab.weftd_command_args(0).join(" "),
        "--socket /run/weft-lab/p/weftd.sock --state-dir /run/weft-lab/p/state \
         --spool-dir /run/weft-lab/p/spool --node-name p-node --quarantine-seconds=30"
    );
    assert_eq!(lab.node_netns_name(), "p-node");
    assert_eq!(spec.progress_steps(), 5);
}

#[test]
fn nodes_of_an_etcd_lab_get_the_store_flags_when_weftd_knows_them() {
    let mut spec = LabSpec::new("p", Path::new("/b"));
    spec.nodes = 3;
    spec.etcd_members = 3;
    spec.routing = "native".into();
    spec.validate().unwrap();
    let lab = lab_of(&spec, true, true);
    assert_eq!(
        lab.weftd_command_args(1).join(" "),
        "--socket /run/weft-lab/p/n2/weftd.sock --state-dir /run/weft-lab/p/n2/state \
         --spool-dir /run/weft-lab/p/n2/spool --node-name p-n2 --store etcd \
         --etcd-endpoints http://198.18.0.2:2379,http://198.18.0.3:2379,http://198.18.0.4:2379 \
         --routing native --underlay-iface ul0 --node-ip 198.18.0.11,2001:2::11 \
         --quarantine-seconds=30"
    );
    // a weftd without those flags: the lab still comes up, embedded stores
    let old = lab_of(&spec, false, false);
    assert!(!old.weftd_command_args(1).contains(&"--store".to_string()));
    // no etcd, several nodes: no store flags either
    spec.etcd_members = 0;
    let plain = lab_of(&spec, true, true);
    assert!(!plain.weftd_command_args(2).contains(&"--store".to_string()));
    assert_eq!(plain.node_netns_name(), "p-n1");
    assert_eq!(spec.progress_steps(), 2 + 3 + 6);
}

#[test]
fn pods_may_not_take_the_labs_own_names() {
    for bad in ["fab", "node", "n1", "n12"] {
        assert!(check_pod_name(bad).is_err(), "{bad}");
    }
    for ok in ["a", "pod-1", "n", "n1x", "nodes"] {
        assert!(check_pod_name(ok).is_ok(), "{ok}");
    }
}

#[test]
fn underlay_addresses_follow_the_node_index() {
    assert_eq!(
        node_underlay(0),
        (
            "198.18.0.10".parse().unwrap(),
            "2001:2::10".parse().unwrap()
        )
    );
    assert_eq!(
        node_underlay(31),
        (
            "198.18.0.41".parse().unwrap(),
            "2001:2::41".parse().unwrap()
        )
    );
    assert_eq!(etcd_address(2), "198.18.0.4".parse::<IpAddr>().unwrap());
}

#[test]
fn stopping_a_process_waits_until_it_is_reaped() {
    let marker = format!("weft-lab-stop-test-{}", std::process::id());
    // a loop of short sleeps: the shell is what gets the signal, and the
    // sleep it leaves behind ends within 0.1 s
    let mut child = Command::new("sh")
        .args(["-c", "while :; do sleep 0.1; done", &marker])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(start_time(pid).is_some());
    // the kernel sets the new command line a moment after spawn returns
    let t0 = Instant::now();
    while !fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
        && t0.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    // the parent reaps late: the process stays a zombie for 300 ms
    let reaper = std::thread::spawn(move || {
        let t0 = Instant::now();
        while pid_alive(pid) && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(300));
        // never left behind, even if stop_pid failed to end it
        let _ = child.kill();
        child.wait().unwrap()
    });
    stop_pid(pid, "sh", &marker);
    let gone = !Path::new(&format!("/proc/{pid}")).exists()
        || start_time(pid).is_none()
        || reaper.is_finished();
    let status = reaper.join().unwrap();
    assert!(!status.success(), "ended by a signal");
    assert!(gone, "stop_pid returned before the process was reaped");
    // another pid, or not ours: left alone and no wait
    let t0 = Instant::now();
    stop_pid(pid, "sh", &marker);
    assert!(t0.elapsed() < Duration::from_secs(1));
}
