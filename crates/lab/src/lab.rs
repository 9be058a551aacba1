//! Building, describing and tearing down a lab.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::cmd::{cni_exec, ip, CniOutcome};

/// Where every lab keeps its files.
pub const LAB_ROOT: &str = "/run/weft-lab";
const NODE_UNDERLAY_V4: &str = "198.18.0.10";
const NODE_UNDERLAY_V6: &str = "2001:2::10";
const FABRIC_V4: &str = "198.18.0.1";
const FABRIC_V6: &str = "2001:2::1";
/// The network name pods of a lab join.
pub const NETWORK: &str = "weft-lab";

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Unique name; prefixes every namespace and the lab's directory.
    pub name: String,
    /// Directory holding weftd and weft-cni.
    pub bin_dir: PathBuf,
    /// MTU of the node's underlay link (pods inherit it).
    pub underlay_mtu: u32,
    /// Quarantine of released addresses, seconds.
    pub quarantine_seconds: u64,
    /// Extra flags for weftd.
    pub weftd_args: Vec<String>,
}

impl LabSpec {
    pub fn new(name: &str, bin_dir: &Path) -> LabSpec {
        LabSpec {
            name: name.to_string(),
            bin_dir: bin_dir.to_path_buf(),
            underlay_mtu: 1500,
            quarantine_seconds: 30,
            weftd_args: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pod {
    pub name: String,
    pub netns: PathBuf,
    pub container_id: String,
    pub ips: Vec<IpAddr>,
}

/// A lab on disk (`lab.json`) and in the kernel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lab {
    pub name: String,
    pub dir: PathBuf,
    pub bin_dir: PathBuf,
    pub fabric_netns: PathBuf,
    pub node_netns: PathBuf,
    pub node_underlay_v4: IpAddr,
    pub node_underlay_v6: IpAddr,
    pub fabric_v4: IpAddr,
    pub fabric_v6: IpAddr,
    pub weftd_pid: Option<u32>,
    pub weftd_args: Vec<String>,
    pub pods: Vec<Pod>,
}

fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 24
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !ok {
        bail!("lab or pod name {name:?}: use 1-24 letters, digits or '-', starting with a letter or digit");
    }
    Ok(())
}

impl Lab {
    pub fn dir_of(name: &str) -> PathBuf {
        Path::new(LAB_ROOT).join(name)
    }

    /// The node namespace's name, for `ip -n`.
    pub fn node_netns_name(&self) -> String {
        format!("{}-node", self.name)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("weftd.sock")
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.dir.join("spool")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("weftd.log")
    }

    pub fn cni_plugin(&self) -> PathBuf {
        self.bin_dir.join("weft-cni")
    }

    /// Builds the lab: namespaces, underlay, weftd. `progress` gets one line per step.
    pub fn up(spec: &LabSpec, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Lab> {
        check_name(&spec.name)?;
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
        let node = format!("{}-node", spec.name);
        let mut lab = Lab {
            name: spec.name.clone(),
            dir: dir.clone(),
            bin_dir: spec.bin_dir.clone(),
            fabric_netns: netns_path(&fab),
            node_netns: netns_path(&node),
            node_underlay_v4: NODE_UNDERLAY_V4.parse()?,
            node_underlay_v6: NODE_UNDERLAY_V6.parse()?,
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
        };
        lab.save()?;
        let built = (|| -> anyhow::Result<()> {
            progress(&format!("creating namespaces {fab} and {node}"));
            ip(&["netns", "add", &fab])?;
            ip(&["netns", "add", &node])?;
            progress("wiring the underlay (198.18.0.0/15, 2001:2::/64)");
            let mtu = spec.underlay_mtu.to_string();
            ip(&[
                "-n", &fab, "link", "add", "br0", "mtu", &mtu, "type", "bridge",
            ])?;
            ip(&["-n", &fab, "link", "set", "lo", "up"])?;
            ip(&["-n", &fab, "link", "set", "br0", "up"])?;
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
            ip(&[
                "link", "add", "ul0", "netns", &node, "mtu", &mtu, "type", "veth", "peer", "name",
                "node0", "netns", &fab, "mtu", &mtu,
            ])?;
            ip(&["-n", &fab, "link", "set", "node0", "master", "br0", "up"])?;
            ip(&["-n", &node, "link", "set", "lo", "up"])?;
            ip(&["-n", &node, "link", "set", "ul0", "up"])?;
            ip(&[
                "-n",
                &node,
                "addr",
                "add",
                &format!("{NODE_UNDERLAY_V4}/15"),
                "dev",
                "ul0",
            ])?;
            ip(&[
                "-n",
                &node,
                "addr",
                "add",
                &format!("{NODE_UNDERLAY_V6}/64"),
                "dev",
                "ul0",
                "nodad",
            ])?;
            ip(&["-n", &node, "route", "add", "default", "via", FABRIC_V4])?;
            ip(&[
                "-n", &node, "-6", "route", "add", "default", "via", FABRIC_V6,
            ])?;
            progress("starting weftd in the node namespace");
            lab.start_weftd()?;
            lab.save()?;
            progress(&format!("weftd ready on {}", lab.socket().display()));
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

    /// Starts weftd inside the node namespace, detached, and waits until its
    /// socket answers.
    pub fn start_weftd(&mut self) -> anyhow::Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.log_path())?;
        let mut cmd = Command::new(self.bin_dir.join("weftd"));
        cmd.arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--spool-dir")
            .arg(self.spool_dir())
            .arg("--node-name")
            .arg(format!("{}-node", self.name))
            .args(&self.weftd_args)
            // as deploy/weftd.service does: glibc's per-thread malloc arenas
            // would otherwise hold freed memory of every connection thread
            .env("MALLOC_ARENA_MAX", "2")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // its own process group: a Ctrl-C at the terminal that ran `weft lab up`
        // must not take the lab's agent down with it
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child =
            weft_datapath::netns::spawn_in(&mut cmd, &self.node_netns).context("starting weftd")?;
        let pid = child.id();
        self.weftd_pid = Some(pid);
        // reap it in the background if it exits while we are still here
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ok = weft_api::http::call(
                &self.socket(),
                "GET",
                weft_api::paths::STATUS,
                b"",
                Duration::from_secs(2),
            )
            .map(|r| r.status == 200)
            .unwrap_or(false);
            if ok {
                // record the pid at once: `down` must find this weftd, not the last one
                return self.save();
            }
            if !pid_alive(pid) {
                bail!("weftd exited at start; see {}", self.log_path().display());
            }
            if Instant::now() > deadline {
                bail!(
                    "weftd did not answer on {} within 15 s; see {}",
                    self.socket().display(),
                    self.log_path().display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops weftd (SIGTERM, then SIGKILL after 5 s) and waits for it to exit.
    /// Pods keep their network: only the agent goes away.
    pub fn stop_weftd(&mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.weftd_pid.take() {
            stop_pid(pid);
        }
        self.save()
    }

    pub fn load(name: &str) -> anyhow::Result<Lab> {
        check_name(name)?;
        let path = Lab::dir_of(name).join("lab.json");
        let bytes = fs::read(&path)
            .with_context(|| format!("no lab named {name} ({} missing)", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))
    }

    /// Every lab on this machine.
    pub fn list() -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(LAB_ROOT)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.path().join("lab.json").exists())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    pub fn save(&self) -> anyhow::Result<()> {
        let tmp = self.dir.join("lab.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        fs::rename(&tmp, self.dir.join("lab.json"))?;
        Ok(())
    }

    /// The network configuration a runtime would hand weft-cni for this lab.
    pub fn net_conf(&self, cni_version: &str) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": cni_version,
            "name": NETWORK,
            "type": "weft-cni",
            "agentSocket": self.socket(),
            "spoolDir": self.spool_dir(),
        })
    }

    /// Runs one CNI verb of weft-cni for `pod` as a runtime would.
    pub fn cni(
        &self,
        command: &str,
        container_id: &str,
        netns: &str,
        pod_name: &str,
        conf: &serde_json::Value,
    ) -> anyhow::Result<CniOutcome> {
        cni_exec(
            &self.cni_plugin(),
            &self.bin_dir,
            &self.node_netns,
            command,
            container_id,
            netns,
            "eth0",
            &format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod_name}"),
            &serde_json::to_vec(conf)?,
        )
    }

    /// Creates a pod namespace and ADDs it through weft-cni.
    pub fn add_pod(&mut self, name: &str) -> anyhow::Result<Pod> {
        check_name(name)?;
        if self.pods.iter().any(|p| p.name == name) {
            bail!("pod {name} exists already in lab {}", self.name);
        }
        let ns = format!("{}-{name}", self.name);
        ip(&["netns", "add", &ns])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let netns = netns_path(&ns);
        let container_id = format!("{}-{name}", self.name);
        let out = self.cni(
            "ADD",
            &container_id,
            &netns.to_string_lossy(),
            name,
            &self.net_conf("1.0.0"),
        );
        let out = match out {
            Ok(o) if o.success => o,
            Ok(o) => {
                let _ = ip(&["netns", "del", &ns]);
                bail!(
                    "weft-cni ADD for pod {name} failed: {}{}",
                    o.stdout.trim(),
                    o.stderr.trim()
                );
            }
            Err(e) => {
                let _ = ip(&["netns", "del", &ns]);
                return Err(e);
            }
        };
        let result = out.json()?;
        let ips = result["ips"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|ip| ip["address"].as_str())
                    .filter_map(|s| s.split('/').next()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let pod = Pod {
            name: name.to_string(),
            netns,
            container_id,
            ips,
        };
        self.pods.push(pod.clone());
        self.save()?;
        Ok(pod)
    }

    /// DELs a pod through weft-cni and removes its namespace.
    pub fn del_pod(&mut self, name: &str) -> anyhow::Result<()> {
        let Some(i) = self.pods.iter().position(|p| p.name == name) else {
            bail!("no pod {name} in lab {}", self.name);
        };
        let pod = self.pods[i].clone();
        let out = self.cni(
            "DEL",
            &pod.container_id,
            &pod.netns.to_string_lossy(),
            name,
            &self.net_conf("1.0.0"),
        )?;
        if !out.success {
            bail!("weft-cni DEL for pod {name} failed: {}", out.stdout.trim());
        }
        let _ = ip(&["netns", "del", &format!("{}-{name}", self.name)]);
        self.pods.remove(i);
        self.save()
    }

    /// Removes everything of lab `name` that exists, going on past errors:
    /// weftd, pod namespaces, node and fabric namespaces, the directory.
    pub fn down(name: &str) -> anyhow::Result<()> {
        check_name(name)?;
        let mut errors = Vec::new();
        if let Ok(lab) = Lab::load(name) {
            if let Some(pid) = lab.weftd_pid {
                stop_pid(pid);
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

fn nix_is_root() -> bool {
    // SAFETY-free: getuid via /proc to keep this crate free of unsafe
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|v| v.split_whitespace().next() == Some("0"))
            })
        })
        .unwrap_or(false)
}

/// Whether `pid` runs (a zombie waiting to be reaped does not count).
pub fn pid_alive(pid: u32) -> bool {
    // a zombie still has /proc/<pid>; look at its state
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// Ends a process this lab started, by its pid: TERM, then KILL after 5 s.
pub(crate) fn stop_pid(pid: u32) {
    // only ever signal the weftd this lab started, never a process that reused its pid
    let is_weftd = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .next()
                .is_some_and(|argv0| argv0.ends_with(b"weftd"))
        })
        .unwrap_or(false);
    if !is_weftd || !pid_alive(pid) {
        return;
    }
    for (signal, patience) in [
        ("-TERM", Duration::from_secs(5)),
        ("-KILL", Duration::from_secs(2)),
    ] {
        let _ = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status();
        let deadline = Instant::now() + patience;
        while pid_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !pid_alive(pid) {
            return;
        }
    }
}

impl Lab {
    /// Runs a plugin chain the way libcni runs a conflist: ADD goes through
    /// the plugins in order, each given the previous result as `prevResult`
    /// and the `runtimeConfig` of the capabilities it declares; DEL goes in
    /// reverse with the chain's final result. Returns the final ADD result
    /// (`Value::Null` for DEL). Plugins other than weft-cni come from
    /// `/usr/lib/cni` (the reference plugins).
    #[expect(
        clippy::too_many_arguments,
        reason = "mirrors the CNI call: verb, ids, netns, config, runtime config, cached result"
    )]
    pub fn run_chain(
        &self,
        command: &str,
        container_id: &str,
        netns: &str,
        pod_name: &str,
        conflist: &serde_json::Value,
        runtime_config: &serde_json::Value,
        prev_result: Option<&serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let plugins = conflist["plugins"]
            .as_array()
            .context("conflist has no plugins array")?;
        let order: Vec<&serde_json::Value> = if command == "DEL" {
            plugins.iter().rev().collect()
        } else {
            plugins.iter().collect()
        };
        let mut prev = prev_result.cloned();
        let cni_path = format!(
            "{}:{}",
            self.bin_dir.display(),
            crate::bench::REFERENCE_PLUGINS
        );
        for plugin in order {
            let mut conf = plugin.clone();
            conf["name"] = conflist["name"].clone();
            conf["cniVersion"] = conflist["cniVersion"].clone();
            if let Some(caps) = plugin["capabilities"].as_object() {
                let mut rc = serde_json::Map::new();
                for (cap, on) in caps {
                    if on == true {
                        if let Some(v) = runtime_config.get(cap) {
                            rc.insert(cap.clone(), v.clone());
                        }
                    }
                }
                if !rc.is_empty() {
                    conf["runtimeConfig"] = serde_json::Value::Object(rc);
                }
            }
            if let Some(p) = &prev {
                conf["prevResult"] = p.clone();
            }
            let kind = conf["type"]
                .as_str()
                .context("plugin without type")?
                .to_string();
            let binary = if kind == "weft-cni" {
                self.cni_plugin()
            } else {
                Path::new(crate::bench::REFERENCE_PLUGINS).join(&kind)
            };
            let out = cni_exec(
                &binary,
                Path::new(&cni_path),
                &self.node_netns,
                command,
                container_id,
                netns,
                "eth0",
                &format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod_name}"),
                &serde_json::to_vec(&conf)?,
            )?;
            if !out.success {
                bail!(
                    "{kind} {command} failed: {}{}",
                    out.stdout.trim(),
                    out.stderr.trim()
                );
            }
            if command == "ADD" {
                prev = Some(out.json()?);
            }
        }
        Ok(if command == "ADD" {
            prev.unwrap_or_default()
        } else {
            serde_json::Value::Null
        })
    }
}
