//! Each node's weftd: its flags, start, readiness, stop.

use super::*;

impl Lab {
    /// Starts node 1's weftd (see [`Lab::start_weftd_on`]).
    pub fn start_weftd(&mut self) -> anyhow::Result<()> {
        self.start_weftd_on(0)
    }

    /// Stops node 1's weftd (see [`Lab::stop_weftd_on`]).
    pub fn stop_weftd(&mut self) -> anyhow::Result<()> {
        self.stop_weftd_on(0)
    }

    /// The flags node `i`'s weftd runs with.
    pub(super) fn weftd_command_args(&self, i: usize) -> Vec<String> {
        let n = &self.nodes[i];
        let mut args = vec![
            "--socket".to_string(),
            n.socket.to_string_lossy().into_owned(),
            "--state-dir".into(),
            n.state_dir().to_string_lossy().into_owned(),
            "--spool-dir".into(),
            n.spool_dir().to_string_lossy().into_owned(),
            "--node-name".into(),
            n.name.clone(),
        ];
        if self.shared_store && !self.etcd.is_empty() {
            args.extend([
                "--store".into(),
                "etcd".into(),
                "--etcd-endpoints".into(),
                self.etcd_endpoints().join(","),
                "--routing".into(),
                self.routing.clone(),
                "--underlay-iface".into(),
                "ul0".into(),
            ]);
            if self.pass_node_ip {
                args.extend([
                    "--node-ip".into(),
                    format!("{},{}", n.underlay_v4, n.underlay_v6),
                ]);
            }
        }
        if self.kube_store {
            args.extend([
                "--node-ip".into(),
                format!("{},{}", n.underlay_v4, n.underlay_v6),
            ]);
        }
        if let Some(cg) = self.node_cgroup(i) {
            args.extend(["--cgroup-root".into(), cg.to_string_lossy().into_owned()]);
        }
        if let Some(pins) = self.node_pin_dir(i) {
            args.extend(["--bpf-pin-dir".into(), pins.to_string_lossy().into_owned()]);
        }
        args.extend(self.weftd_args.iter().cloned());
        args
    }

    /// Starts node `i`'s weftd with the lab's arguments and waits (at most
    /// 15 s) until its socket answers.
    pub fn start_weftd_on(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn_weftd_on(i)?;
        self.wait_weftd_on(i, Duration::from_secs(15))
    }

    /// Starts node `i`'s weftd and returns at once, its pid recorded (so
    /// `down` finds it even if it never answers).
    pub fn spawn_weftd_on(&mut self, i: usize) -> anyhow::Result<u32> {
        let node = self.node(i)?.clone();
        if node.weftd_alive() {
            bail!(
                "weftd of {} runs already (pid {})",
                node.name,
                node.weftd_pid.unwrap_or_default()
            );
        }
        fs::create_dir_all(&node.dir)?;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(node.log_path())?;
        let mut cmd = Command::new(self.bin_dir.join("weftd"));
        cmd.args(self.weftd_command_args(i))
            // as deploy/weftd.service does: glibc's per-thread malloc arenas
            // would otherwise hold freed memory of every connection thread
            .env("MALLOC_ARENA_MAX", "2")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // its own process group: a Ctrl-C at the terminal that ran `weft lab up`
        // must not take the lab's agent down with it
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = weft_datapath::netns::spawn_in(&mut cmd, &node.netns)
            .with_context(|| format!("starting weftd in {}", node.name))?;
        let pid = child.id();
        self.set_weftd_pid(i, Some(pid));
        self.save()?;
        // reap it in the background if it exits while we are still here
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok(pid)
    }

    /// Waits (at most `limit`) until node `i`'s weftd answers on its socket;
    /// fails at once if it exited.
    pub fn wait_weftd_on(&self, i: usize, limit: Duration) -> anyhow::Result<()> {
        let node = self.node(i)?;
        let pid = node
            .weftd_pid
            .with_context(|| format!("no weftd started on {}", node.name))?;
        let deadline = Instant::now() + limit;
        loop {
            let ok = weft_api::http::call(
                &node.socket,
                "GET",
                weft_api::paths::STATUS,
                b"",
                Duration::from_secs(2),
            )
            .map(|r| r.status == 200)
            .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if !pid_alive(pid) {
                bail!(
                    "weftd of {} exited at start; see {}",
                    node.name,
                    node.log_path().display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "weftd of {} did not answer on {} within {} s; see {}",
                    node.name,
                    node.socket.display(),
                    limit.as_secs(),
                    node.log_path().display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops node `i`'s weftd (SIGTERM, then SIGKILL after 5 s) and waits for
    /// it to exit. Pods keep their network: only the agent goes away.
    pub fn stop_weftd_on(&mut self, i: usize) -> anyhow::Result<()> {
        let marker = self.pid_marker();
        if let Some(pid) = self.node(i)?.weftd_pid {
            stop_pid(pid, "weftd", &marker);
        }
        self.set_weftd_pid(i, None);
        self.save()
    }

    pub(super) fn set_weftd_pid(&mut self, i: usize, pid: Option<u32>) {
        self.nodes[i].weftd_pid = pid;
        if i == 0 {
            self.weftd_pid = pid;
        }
    }

    /// What the command line of every process of this lab contains (its
    /// directory): a pid reused by another process is never signalled.
    pub(crate) fn pid_marker(&self) -> String {
        format!("{}/", self.dir.display())
    }
}
