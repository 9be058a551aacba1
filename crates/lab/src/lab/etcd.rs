//! The lab's etcd members in the fabric namespace: start, health,
//! leadership, stop.

use super::*;

impl Lab {
    /// Starts etcd member `i` in the fabric namespace and records its pid.
    pub(super) fn spawn_etcd(&mut self, i: usize) -> anyhow::Result<()> {
        let m = self.etcd[i].clone();
        fs::create_dir_all(m.data_dir.parent().unwrap_or(&self.dir))?;
        let cluster = self
            .etcd
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&m.log)?;
        let mut cmd = Command::new(ETCD_BIN);
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(m.client_url())
            .arg("--advertise-client-urls")
            .arg(m.client_url())
            .arg("--listen-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-advertise-peer-urls")
            .arg(m.peer_url())
            .arg("--initial-cluster")
            .arg(&cluster)
            .arg("--initial-cluster-token")
            .arg(format!("weft-lab-{}", self.name))
            // ignored once the data directory exists (a restarted member)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--logger")
            .arg("zap")
            .arg("--log-outputs")
            .arg("stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = weft_datapath::netns::spawn_in(&mut cmd, &self.fabric_netns)
            .with_context(|| format!("starting etcd member {}", m.name))?;
        self.etcd[i].pid = Some(child.id());
        self.save()?;
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok(())
    }

    /// Waits (at most 15 s) until every running member — or only `only` —
    /// answers `/health` with `"health":"true"`.
    pub(super) fn wait_etcd_healthy(&self, only: Option<usize>) -> anyhow::Result<()> {
        let deadline = Instant::now() + ETCD_HEALTH_WAIT;
        let wanted: Vec<usize> = match only {
            Some(i) => vec![i],
            None => (0..self.etcd.len()).collect(),
        };
        loop {
            let mut pending = Vec::new();
            for &i in &wanted {
                let m = &self.etcd[i];
                if !m.alive() {
                    bail!("etcd member {} exited; see {}", m.name, m.log.display());
                }
                if !self.etcd_member_healthy(i) {
                    pending.push(m.name.clone());
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd member(s) {} not healthy within {} s; see {}",
                    pending.join(", "),
                    ETCD_HEALTH_WAIT.as_secs(),
                    self.dir.join("etcd").display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether etcd member `i` answers `GET /health` with `"health":"true"`,
    /// asked from inside the fabric namespace.
    pub fn etcd_member_healthy(&self, i: usize) -> bool {
        let Some(m) = self.etcd.get(i) else {
            return false;
        };
        let addr = SocketAddr::new(m.address, ETCD_CLIENT_PORT);
        let body = weft_datapath::netns::run_in(&self.fabric_netns, move || {
            http_get(addr, "/health", Duration::from_secs(1))
        });
        matches!(body, Ok(Ok(b)) if b.replace(' ', "").contains("\"health\":\"true\""))
    }

    /// Whether etcd member `i` is the cluster's leader now (its metrics say
    /// so); false when it does not answer within a second.
    pub fn etcd_member_leads(&self, i: usize) -> bool {
        let Some(m) = self.etcd.get(i) else {
            return false;
        };
        let addr = SocketAddr::new(m.address, ETCD_CLIENT_PORT);
        let body = weft_datapath::netns::run_in(&self.fabric_netns, move || {
            http_get(addr, "/metrics", Duration::from_secs(1))
        });
        matches!(body, Ok(Ok(b)) if b.lines().any(|l| l.trim() == "etcd_server_is_leader 1"))
    }

    /// Stops etcd member `i` (0-based; SIGTERM, then SIGKILL) for failure tests.
    pub fn stop_etcd_member(&mut self, i: usize) -> anyhow::Result<()> {
        let marker = self.pid_marker();
        let m = self
            .etcd
            .get_mut(i)
            .with_context(|| format!("no etcd member index {i}"))?;
        if let Some(pid) = m.pid.take() {
            stop_pid(pid, "etcd", &marker);
        }
        self.save()
    }

    /// Starts etcd member `i` again (same data directory) and waits until it
    /// reports healthy (at most 15 s; needs a quorum of members running).
    pub fn start_etcd_member(&mut self, i: usize) -> anyhow::Result<()> {
        let m = self
            .etcd
            .get(i)
            .with_context(|| format!("no etcd member index {i}"))?;
        if m.alive() {
            bail!(
                "etcd member {} runs already (pid {})",
                m.name,
                m.pid.unwrap_or_default()
            );
        }
        self.spawn_etcd(i)?;
        self.wait_etcd_healthy(Some(i))
    }

    /// Starts the given stopped members together and waits until every
    /// member is healthy: after all of them were down, none can be healthy
    /// alone (a member needs a quorum), so they must come back as a group.
    pub fn start_etcd_members(&mut self, which: &[usize]) -> anyhow::Result<()> {
        for &i in which {
            let m = self
                .etcd
                .get(i)
                .with_context(|| format!("no etcd member index {i}"))?;
            if !m.alive() {
                self.spawn_etcd(i)?;
            }
        }
        self.wait_etcd_healthy(None)
    }
}
