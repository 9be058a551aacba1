//! The processes of a lab cluster: control-plane components in the fabric
//! namespace and node agents in the nodes' namespaces, each recorded in
//! lab.json with its pid as soon as it runs.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use super::{control_plane, proxy, spawn_logged, KubeProcess, ProxyMode, COMPONENTS, PATH};
use crate::lab::{stop_pid, Lab};

impl Lab {
    /// Starts control-plane component `name` (one of [`COMPONENTS`]) in
    /// the fabric namespace and records its pid; does not wait.
    pub fn start_component(&mut self, name: &str) -> anyhow::Result<u32> {
        let kube = self.kube_required()?.clone();
        if let Some(p) = kube.process(name, None).filter(|p| p.alive()) {
            bail!("{name} runs already (pid {})", p.pid.unwrap_or_default());
        }
        let l = kube.layout();
        let args = match name {
            "etcd" => control_plane::etcd_args(&l),
            "kube-apiserver" => control_plane::apiserver_args(&l),
            "kube-controller-manager" => control_plane::controller_manager_args(&l),
            "kube-scheduler" => control_plane::scheduler_args(&l),
            other => bail!("no control-plane component {other:?}: use one of {COMPONENTS:?}"),
        };
        let log = l.log(name);
        let mut cmd = Command::new(kube.bin_dir.join(name));
        cmd.env_clear().env("PATH", PATH).args(args);
        let pid = spawn_logged(&mut cmd, &self.fabric_netns, &log)?;
        self.record(KubeProcess {
            name: name.into(),
            node: None,
            program: name.into(),
            pid: Some(pid),
            log,
        })?;
        Ok(pid)
    }

    /// Stops control-plane component `name` (TERM, then KILL after 5 s).
    pub fn stop_component(&mut self, name: &str) -> anyhow::Result<()> {
        self.stop_process(name, None)
    }

    /// Stops the API server (for fault tests); the rest keeps running.
    pub fn stop_apiserver(&mut self) -> anyhow::Result<()> {
        self.stop_component("kube-apiserver")
    }

    /// Starts the API server again and waits (at most `limit`) until it is
    /// ready.
    pub fn start_apiserver(&mut self, limit: Duration) -> anyhow::Result<()> {
        self.start_component("kube-apiserver")?;
        self.wait_apiserver_ready(limit, &mut |_| {})
    }

    /// Spawns a node agent in node `i`'s namespace (output to
    /// `<node dir>/<name>.log`) and records its pid, so `down` stops it
    /// before the control plane. Its command line must mention the lab's
    /// directory (e.g. a kubeconfig of the lab): `down` checks that before
    /// signalling a pid, never to hit a process that reused it.
    pub fn spawn_node_agent(
        &mut self,
        i: usize,
        name: &str,
        cmd: &mut Command,
    ) -> anyhow::Result<u32> {
        self.kube_required()?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            bail!("node agent name {name:?}: use letters, digits and '-' (it names its log)");
        }
        let node = self.node(i)?.clone();
        if let Some(p) = self
            .kube
            .as_ref()
            .and_then(|k| k.process(name, Some(i)))
            .filter(|p| p.alive())
        {
            bail!(
                "{name} runs already on {} (pid {})",
                node.name,
                p.pid.unwrap_or_default()
            );
        }
        let marker = self.pid_marker();
        if !cmd
            .get_args()
            .any(|a| a.to_string_lossy().contains(&marker))
        {
            bail!(
                "node agent {name}: its arguments must mention the lab directory {marker} \
                 (e.g. its kubeconfig) so `lab down` can tell it from a process that reused its pid"
            );
        }
        let program = Path::new(cmd.get_program())
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .context("node agent without a program")?;
        fs::create_dir_all(&node.dir)?;
        let log = node.dir.join(format!("{name}.log"));
        let pid = spawn_logged(cmd, &node.netns, &log)?;
        self.record(KubeProcess {
            name: name.into(),
            node: Some(i),
            program,
            pid: Some(pid),
            log,
        })?;
        Ok(pid)
    }

    /// Starts kube-proxy on node `i` in `mode` (a kube-proxy starting in
    /// one mode removes the rules another mode left).
    pub fn start_kube_proxy(&mut self, i: usize, mode: ProxyMode) -> anyhow::Result<u32> {
        let kube = self.kube_required()?.clone();
        let n = self.node(i)?.clone();
        let mut cmd = Command::new(kube.bin_dir.join("kube-proxy"));
        cmd.env_clear().env("PATH", PATH).args(proxy::args(
            &n.name,
            n.underlay_v4,
            &kube.proxy_kubeconfig,
            mode,
        ));
        self.spawn_node_agent(i, "kube-proxy", &mut cmd)
    }

    /// Stops node agent `name` on node `i`.
    pub fn stop_node_agent(&mut self, i: usize, name: &str) -> anyhow::Result<()> {
        self.stop_process(name, Some(i))
    }

    fn stop_process(&mut self, name: &str, node: Option<usize>) -> anyhow::Result<()> {
        let marker = self.pid_marker();
        let kube = self.kube.as_mut().context("no Kubernetes in this lab")?;
        let p = kube
            .processes
            .iter_mut()
            .find(|p| p.name == name && p.node == node)
            .with_context(|| format!("no process {name} in this lab cluster"))?;
        if let Some(pid) = p.pid.take() {
            stop_pid(pid, &p.program, &marker);
        }
        self.save()
    }

    /// Records (or replaces) a process of the cluster and saves lab.json at
    /// once, so `down` finds it even if this process dies next.
    pub(super) fn record(&mut self, proc: KubeProcess) -> anyhow::Result<()> {
        let kube = self.kube.as_mut().context("no Kubernetes in this lab")?;
        kube.processes
            .retain(|p| !(p.name == proc.name && p.node == proc.node));
        kube.processes.push(proc);
        self.save()
    }
}
