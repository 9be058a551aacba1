//! A lab's life: `up` builds it (namespaces, underlay, etcd, weftd on
//! every node), `down` removes whatever of it exists.

use super::*;

impl Lab {
    /// Builds the lab: namespaces, underlay, etcd, one weftd per node.
    /// `progress` gets one line per step ([`LabSpec::progress_steps`] in all).
    pub fn up(spec: &LabSpec, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Lab> {
        spec.validate()?;
        if !nix_is_root() {
            bail!("a lab needs root (network namespaces); run it with sudo");
        }
        for bin in ["weftd", "weft-cni"] {
            if !spec.bin_dir.join(bin).exists() {
                bail!(
                    "{} not found in {}; build with `cargo build --release` first",
                    bin,
                    spec.bin_dir.display()
                );
            }
        }
        if spec.etcd_members > 0 && !Path::new(ETCD_BIN).exists() {
            bail!("{ETCD_BIN} not found; apt-get install etcd-server (make setup does)");
        }
        let dir = Lab::dir_of(&spec.name);
        if dir.join("lab.json").exists() {
            bail!(
                "lab {} exists already; `weft lab down --name {}` first",
                spec.name,
                spec.name
            );
        }
        fs::create_dir_all(&dir)?;
        let fab = format!("{}-fab", spec.name);
        let nodes: Vec<NodeInfo> = (0..spec.nodes)
            .map(|i| {
                let name = if spec.is_classic() {
                    format!("{}-node", spec.name)
                } else {
                    format!("{}-n{}", spec.name, i + 1)
                };
                let node_dir = if i == 0 {
                    dir.clone()
                } else {
                    dir.join(format!("n{}", i + 1))
                };
                let (underlay_v4, underlay_v6) = node_underlay(i);
                NodeInfo {
                    netns: netns_path(&name),
                    name,
                    socket: node_dir.join("weftd.sock"),
                    dir: node_dir,
                    underlay_v4,
                    underlay_v6,
                    weftd_pid: None,
                }
            })
            .collect();
        let etcd: Vec<EtcdMember> = (0..spec.etcd_members)
            .map(|i| EtcdMember {
                name: format!("e{}", i + 1),
                address: etcd_address(i),
                data_dir: dir.join("etcd").join(format!("e{}", i + 1)),
                log: dir.join("etcd").join(format!("e{}.log", i + 1)),
                pid: None,
            })
            .collect();
        let mut lab = Lab {
            name: spec.name.clone(),
            dir: dir.clone(),
            bin_dir: spec.bin_dir.clone(),
            fabric_netns: netns_path(&fab),
            node_netns: nodes[0].netns.clone(),
            node_underlay_v4: nodes[0].underlay_v4,
            node_underlay_v6: nodes[0].underlay_v6,
            fabric_v4: FABRIC_V4.parse()?,
            fabric_v6: FABRIC_V6.parse()?,
            weftd_pid: None,
            weftd_args: std::iter::once(format!(
                "--quarantine-seconds={}",
                spec.quarantine_seconds
            ))
            .chain(spec.weftd_args.iter().cloned())
            .collect(),
            pods: Vec::new(),
            nodes,
            etcd,
            routing: spec.routing.clone(),
            shared_store: false,
            pass_node_ip: false,
            kube_store: false,
            kube: None,
        };
        lab.save()?;
        let built = (|| -> anyhow::Result<()> {
            let names: Vec<&str> = lab.nodes.iter().map(|n| n.name.as_str()).collect();
            progress(&format!(
                "creating namespaces {fab} and {}",
                names.join(", ")
            ));
            ip(&["netns", "add", &fab])?;
            for n in &names {
                ip(&["netns", "add", n])?;
            }
            progress(&format!(
                "wiring the underlay: bridge br0 in {fab} (198.18.0.0/15, 2001:2::/64){}",
                if lab.etcd.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", etcd addresses {}",
                        lab.etcd
                            .iter()
                            .map(|m| m.address.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ));
            let mtu = spec.underlay_mtu.to_string();
            ip(&[
                "-n", &fab, "link", "add", "br0", "mtu", &mtu, "type", "bridge",
            ])?;
            ip(&["-n", &fab, "link", "set", "lo", "up"])?;
            ip(&["-n", &fab, "link", "set", "br0", "up"])?;
            switch_only(&fab);
            ip(&[
                "-n",
                &fab,
                "addr",
                "add",
                &format!("{FABRIC_V4}/15"),
                "dev",
                "br0",
            ])?;
            ip(&[
                "-n",
                &fab,
                "addr",
                "add",
                &format!("{FABRIC_V6}/64"),
                "dev",
                "br0",
                "nodad",
            ])?;
            for m in &lab.etcd {
                ip(&[
                    "-n",
                    &fab,
                    "addr",
                    "add",
                    &format!("{}/15", m.address),
                    "dev",
                    "br0",
                ])?;
            }
            for (i, n) in lab.nodes.iter().enumerate() {
                progress(&format!(
                    "node {}: ul0 {}/15, {}/64, default routes via the fabric",
                    n.name, n.underlay_v4, n.underlay_v6
                ));
                wire_node(&fab, &n.name, i, &mtu, n.underlay_v4, n.underlay_v6)?;
            }
            // the API server starts while the weftds come up; finish() waits
            if let Some(k) = &spec.kubernetes {
                crate::kube::start(&mut lab, k, progress)?;
            }
            if !lab.etcd.is_empty() {
                let started = Instant::now();
                for i in 0..lab.etcd.len() {
                    progress(&format!(
                        "starting etcd member {} on {} (in {fab})",
                        lab.etcd[i].name,
                        lab.etcd[i].client_url()
                    ));
                    lab.spawn_etcd(i)?;
                }
                lab.wait_etcd_healthy(None)?;
                progress(&format!(
                    "etcd healthy: {} member(s) in {} ms",
                    lab.etcd.len(),
                    started.elapsed().as_millis()
                ));
                (lab.shared_store, lab.pass_node_ip) = weftd_multinode_flags(&lab.bin_dir);
                lab.save()?;
            }
            for i in 0..lab.nodes.len() {
                let note = if !lab.etcd.is_empty() && !lab.shared_store {
                    " (this weftd has no --store etcd yet: embedded store)"
                } else {
                    ""
                };
                progress(&format!("starting weftd in {}{note}", lab.nodes[i].name));
                lab.start_weftd_on(i)?;
                progress(&format!(
                    "weftd of {} ready on {} (pid {})",
                    lab.nodes[i].name,
                    lab.nodes[i].socket.display(),
                    lab.nodes[i].weftd_pid.unwrap_or_default()
                ));
            }
            if let Some(k) = &spec.kubernetes {
                crate::kube::finish(&mut lab, k, progress)?;
            }
            Ok(())
        })();
        if let Err(e) = built {
            let _ = Lab::down(&spec.name);
            return Err(e.context(format!(
                "building lab {}; everything it made was removed",
                spec.name
            )));
        }
        Ok(lab)
    }

    /// Removes everything of lab `name` that exists, going on past errors:
    /// every node's weftd and every etcd member (by their recorded pids),
    /// pod, node and fabric namespaces, the directory.
    pub fn down(name: &str) -> anyhow::Result<()> {
        check_name(name)?;
        let mut errors = Vec::new();
        if let Ok(lab) = Lab::load(name) {
            let marker = lab.pid_marker();
            // a Kubernetes cluster's node agents and control plane first
            crate::kube::stop_all(&lab, &marker);
            // the agents first (etcd's clients), in parallel
            let mut weftds: Vec<u32> = lab
                .nodes
                .iter()
                .filter_map(|n| n.weftd_pid)
                .chain(lab.weftd_pid)
                .collect();
            weftds.sort_unstable();
            weftds.dedup();
            std::thread::scope(|s| {
                for pid in weftds {
                    let marker = &marker;
                    s.spawn(move || stop_pid(pid, "weftd", marker));
                }
            });
            // then etcd, one member at a time, followers first: a leader told
            // to stop while a follower still runs tries to hand leadership
            // over, which can take seconds while the cluster is shrinking;
            // stopped last, it has nobody to hand it to
            let mut members: Vec<(bool, u32)> = (0..lab.etcd.len())
                .filter_map(|i| lab.etcd[i].pid.map(|pid| (lab.etcd_member_leads(i), pid)))
                .collect();
            members.sort_by_key(|(leader, _)| *leader);
            for (_, pid) in members {
                stop_pid(pid, "etcd", &marker);
            }
        }
        // every namespace carrying the lab's prefix, also those lab.json never recorded
        let prefix = format!("{name}-");
        if let Ok(rd) = fs::read_dir("/run/netns") {
            for e in rd.filter_map(Result::ok) {
                let ns = e.file_name().to_string_lossy().into_owned();
                if ns.starts_with(&prefix) {
                    if let Err(err) = ip(&["netns", "del", &ns]) {
                        errors.push(err.to_string());
                    }
                }
            }
        }
        let dir = Lab::dir_of(name);
        if dir.exists() {
            if let Err(e) = fs::remove_dir_all(&dir) {
                errors.push(format!("removing {}: {e}", dir.display()));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("lab {name} partly removed: {}", errors.join("; "))
        }
    }
}
