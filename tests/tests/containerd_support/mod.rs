//! A private containerd for the containerd runtime test: its own config,
//! root, state and socket under a temp directory, running in the lab's node
//! network namespace and in a private mount namespace where /etc/cni/net.d,
//! /opt/cni/bin, /var/lib/cni and /run/containerd are the test's own
//! directories. `ctr` always reads the first three (not configurable in
//! containerd 1.6) and the shim and `ctr` both use the hard-wired
//! /run/containerd (shim sockets, runc root, stdio fifos), so every `ctr`
//! call enters containerd's mount namespace (`nsenter --mount`).
//!
//! Paths that do not exist on the host cannot be bind-mounted over; their
//! nearest existing parent is then hidden behind a tmpfs that re-exposes each
//! of its entries by bind mount (writes to them still reach the host, as
//! before), so the missing directory can be created on the tmpfs. Every mount
//! lives only in that namespace: it goes away with the last process in it.
//!
//! Teardown (`shutdown`, or `Drop` on failure) kills only what this guard
//! started, by pid: the foreground `ctr run`s, containerd, then whatever is
//! left in the private mount namespace (the shims) and the containers' own
//! processes found by their cgroup.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use weft_lab::Lab;

mod image;
pub use image::build_busybox_image;
use image::busybox;

/// containerd namespace of the test's containers; libcni gets
/// `<namespace>-<container id>` as CNI_CONTAINERID.
pub const CTR_NAMESPACE: &str = "weft";
/// The image the test builds and imports.
pub const IMAGE: &str = "docker.io/weft/busybox:test";
/// Debian's reference CNI plugins.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";
/// Host paths the test must never leave anything in.
pub const HOST_PATHS: [&str; 5] = [
    "/etc/cni/net.d",
    "/opt/cni",
    "/var/lib/cni",
    "/var/lib/containerd",
    "/run/containerd",
];

/// Run inside `unshare -m --propagation private`: makes the private paths,
/// then execs the rest of its arguments. `$1` is the test's directory.
const SETUP_SH: &str = r#"set -eu
P=$1; shift
# libmount would otherwise create /run/mount (utab) on the host's /run
export LIBMOUNT_UTAB="$P/utab"
shadow() {
  d=$1; s=$P/stage$(echo "$d" | tr / _)
  mkdir -p "$s"
  mount --rbind "$d" "$s"
  mount -t tmpfs -o mode=0755 weft-ctr-shadow "$d"
  for e in "$s"/* "$s"/.[!.]*; do
    [ -e "$e" ] || [ -L "$e" ] || continue
    n=${e##*/}
    if [ -L "$e" ]; then ln -s "$(readlink "$e")" "$d/$n"
    elif [ -d "$e" ]; then mkdir -p "$d/$n"; mount --rbind "$e" "$d/$n"
    else [ -e "$d/$n" ] || : > "$d/$n"; mount --bind "$e" "$d/$n"; fi
  done
}
private() {
  t=$1
  if [ ! -d "$t" ]; then
    a=$(dirname "$t"); while [ ! -d "$a" ]; do a=$(dirname "$a"); done
    [ "$a" != / ] || { echo "refusing to shadow /" >&2; exit 90; }
    shadow "$a"; mkdir -p "$t"
  fi
  mount --bind "$2" "$t"
}
private /etc/cni/net.d "$P/net.d"
private /opt/cni/bin "$P/cni-bin"
private /var/lib/cni "$P/var-lib-cni"
private /run/containerd "$P/run-containerd"
exec "$@"
"#;

/// Records each CNI call's environment, then becomes the real weft-cni
/// (exec: same stdin, stdout, exit code).
const RECORDER_SH: &str = r#"#!/bin/sh
printf '%s|%s|%s|%s|%s\n' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" >> "@LOG@"
exec "@REAL@" "$@"
"#;

/// One CNI call as the plugin saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniCall {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub args: String,
}

/// Runs `cmd` with stdin closed; kills it (by pid) if it outlives `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> anyhow::Result<Output> {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => Ok(out?),
        Err(_) => {
            kill_pid(pid, "KILL");
            let _ = rx.recv_timeout(Duration::from_secs(5));
            bail!("{what} did not finish within {limit:?}; killed")
        }
    }
}

fn kill_pid(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mnt_ns_of(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

/// Processes (other than zombies) whose mount namespace is `ns`.
fn pids_in_mnt_ns(ns: &Path) -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| mnt_ns_of(*pid).as_deref() == Some(ns) && weft_lab::pid_alive(*pid))
        .collect()
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|f| f.is_file())
    })
}

/// Fails (not skips) when a tool the test needs is missing: CI installs them
/// (scripts/setup.sh).
pub fn require_tools() {
    let missing: Vec<&str> = [
        "containerd",
        "ctr",
        "containerd-shim-runc-v2",
        "runc",
        "unshare",
        "nsenter",
        "tar",
        "sha256sum",
    ]
    .into_iter()
    .filter(|b| which(b).is_none())
    .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}: install containerd, runc and busybox-static (scripts/setup.sh does); \
         this test does not skip when they are absent"
    );
    assert!(
        busybox().is_some(),
        "no static busybox: apt-get install busybox-static (scripts/setup.sh does)"
    );
}

/// A foreground `ctr run --cni --rm`, running as our child.
struct Run {
    id: String,
    child: Child,
    log: PathBuf,
}

/// The private containerd; removes everything it made when dropped.
pub struct Containerd {
    pub dir: PathBuf,
    node_netns: PathBuf,
    lab_name: String,
    daemon: Option<Child>,
    pid: u32,
    mnt_ns: PathBuf,
    /// Holds the private mount namespace alive until teardown has looked
    /// for stray processes in it: a freed namespace's inode number is reused,
    /// and a parallel test's new namespace must never look like ours.
    mnt_ns_hold: Option<fs::File>,
    runs: Vec<Run>,
    cgroups: Vec<String>,
    exec_seq: usize,
    /// Which of HOST_PATHS existed before we started.
    host_before: Vec<bool>,
    done: bool,
}

impl Containerd {
    /// Writes the config, the CNI config (`conflist`, with weft-cni's log
    /// turned on) and the plugin dir (weft-cni behind a recorder, plus links
    /// to the reference `plugins` from /usr/lib/cni), and starts containerd
    /// in the lab's node namespace inside a private mount namespace.
    pub fn start(
        lab: &Lab,
        conflist: &serde_json::Value,
        plugins: &[&str],
    ) -> anyhow::Result<Containerd> {
        let dir = std::env::temp_dir().join(format!("weft-ctr-{}", lab.name));
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("stale {}", dir.display()))?;
        }
        for d in [
            "net.d",
            "cni-bin",
            "var-lib-cni",
            "run-containerd",
            "root",
            "state",
            "opt",
        ] {
            fs::create_dir_all(dir.join(d))?;
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        let host_before = HOST_PATHS.iter().map(|p| Path::new(p).exists()).collect();

        // the plugin dir: the real weft-cni behind a recorder of the CNI env
        let real = dir.join("cni-bin/weft-cni.real");
        fs::copy(lab.cni_plugin(), &real)?;
        fs::set_permissions(&real, fs::Permissions::from_mode(0o755))?;
        let recorder = RECORDER_SH
            .replace("@LOG@", &dir.join("cni-calls.log").to_string_lossy())
            .replace("@REAL@", &real.to_string_lossy());
        fs::write(dir.join("cni-bin/weft-cni"), recorder)?;
        fs::set_permissions(
            dir.join("cni-bin/weft-cni"),
            fs::Permissions::from_mode(0o755),
        )?;
        for p in plugins {
            let src = Path::new(REFERENCE_PLUGINS).join(p);
            if !src.is_file() {
                bail!(
                    "{} missing: apt-get install containernetworking-plugins",
                    src.display()
                );
            }
            std::os::unix::fs::symlink(&src, dir.join("cni-bin").join(p))?;
        }

        let mut conflist = conflist.clone();
        let weft = conflist["plugins"]
            .as_array_mut()
            .context("conflist has plugins")?
            .iter_mut()
            .find(|p| p["type"] == "weft-cni")
            .context("conflist has weft-cni")?;
        weft["logFile"] = dir.join("weft-cni.log").to_string_lossy().into();
        weft["logLevel"] = "debug".into();
        fs::write(
            dir.join("net.d/10-weft.conflist"),
            serde_json::to_vec_pretty(&conflist)?,
        )?;

        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.devmapper",
]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#,
            d = dir.display()
        );
        fs::write(dir.join("config.toml"), config)?;
        fs::write(dir.join("setup.sh"), SETUP_SH)?;

        let log = fs::File::create(dir.join("containerd.log"))?;
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh"])
            .arg(dir.join("setup.sh"))
            .arg(&dir)
            .arg("nsenter")
            .arg(format!("--net={}", lab.node_netns.display()))
            .arg("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut ctd = Containerd {
            dir: dir.clone(),
            node_netns: lab.node_netns.clone(),
            lab_name: lab.name.clone(),
            daemon: None,
            pid: 0,
            mnt_ns: PathBuf::new(),
            mnt_ns_hold: None,
            runs: Vec::new(),
            cgroups: Vec::new(),
            exec_seq: 0,
            host_before,
            done: false,
        };
        let child = cmd.spawn().context("starting unshare … containerd")?;
        ctd.pid = child.id();
        ctd.daemon = Some(child);
        let own_ns = mnt_ns_of(std::process::id()).context("own mount namespace")?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = ctd
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "containerd exited ({st}) at start: {}",
                    fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
                );
            }
            // the exec chain unshare → sh → nsenter → containerd keeps the pid
            let ns = mnt_ns_of(ctd.pid);
            let comm = fs::read_to_string(format!("/proc/{}/comm", ctd.pid)).unwrap_or_default();
            if comm.trim() == "containerd" && ns.as_ref().is_some_and(|n| *n != own_ns) {
                if ctd.mnt_ns_hold.is_none() {
                    let hold = fs::File::open(format!("/proc/{}/ns/mnt", ctd.pid))?;
                    // still containerd's (not a reused pid's) once the file is open
                    if mnt_ns_of(ctd.pid) != ns {
                        bail!("containerd (pid {}) vanished at start", ctd.pid);
                    }
                    ctd.mnt_ns_hold = Some(hold);
                }
                ctd.mnt_ns = ns.unwrap_or_default();
                let up = ctd
                    .ctr(&["version"], Duration::from_secs(5))
                    .map(|o| o.status.success())
                    .unwrap_or(false);
                if up {
                    return Ok(ctd);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not answer within 15 s: {}",
                    fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ctr` in containerd's mount namespace and the node's network namespace.
    fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--mount=/proc/{}/ns/mnt", self.pid))
            .arg(format!("--net={}", self.node_netns.display()))
            .arg("ctr")
            .arg("-a")
            .arg(self.dir.join("containerd.sock"))
            .arg("-n")
            .arg(CTR_NAMESPACE)
            .args(args);
        cmd
    }

    pub fn ctr(&self, args: &[&str], limit: Duration) -> anyhow::Result<Output> {
        output_within(&mut self.ctr_cmd(args), limit)
    }

    /// `ctr` that must succeed; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.ctr(args, Duration::from_secs(15))?;
        if !out.status.success() {
            bail!(
                "ctr {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn import(&self, tar: &Path) -> anyhow::Result<String> {
        self.ctr_ok(&["images", "import", &tar.to_string_lossy()])
    }

    /// The cgroup path of container `id` (one level, so runc removes it
    /// all); ids carry the lab's name, so they are unique on the host.
    fn cgroup_of(&self, id: &str) -> String {
        format!("weft-ctr-{id}")
    }

    /// Starts `ctr run --cni --rm IMAGE id cmd…` in the foreground of a child
    /// process: ctr sends ADD before starting the task and DEL after it ends.
    pub fn run(&mut self, id: &str, cmd: &[&str]) -> anyhow::Result<()> {
        let cgroup = self.cgroup_of(id);
        let log_path = self.dir.join(format!("run-{id}.log"));
        let log = fs::File::create(&log_path)?;
        let cg = format!("/{cgroup}");
        let mut args = vec!["run", "--cni", "--rm", "--cgroup", &cg, IMAGE, id];
        args.extend_from_slice(cmd);
        let child = self
            .ctr_cmd(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting ctr run")?;
        self.cgroups.push(cgroup);
        self.runs.push(Run {
            id: id.to_string(),
            child,
            log: log_path,
        });
        Ok(())
    }

    /// `ctr run -d --cni IMAGE id cmd…`: ADD, then ctr returns. ctr never
    /// sends this container's DEL, not even when the task is killed and the
    /// container removed.
    pub fn run_detached(&mut self, id: &str, cmd: &[&str]) -> anyhow::Result<()> {
        let cg = format!("/{}", self.cgroup_of(id));
        let mut args = vec!["run", "-d", "--cni", "--cgroup", &cg, IMAGE, id];
        args.extend_from_slice(cmd);
        self.cgroups.push(self.cgroup_of(id));
        self.ctr_ok(&args).map(|_| ())
    }

    /// Kills task `id`, waits until it stopped, deletes task and container.
    pub fn kill_and_remove(&self, id: &str) -> anyhow::Result<()> {
        self.ctr_ok(&["task", "kill", "-s", "SIGKILL", id])?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ls = self.ctr_ok(&["task", "ls"])?;
            let stopped = ls
                .lines()
                .any(|l| l.split_whitespace().next() == Some(id) && l.contains("STOPPED"));
            if stopped {
                break;
            }
            if Instant::now() >= deadline {
                bail!("task {id} not stopped after kill: {ls}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.ctr_ok(&["task", "delete", id])?;
        self.ctr_ok(&["containers", "rm", id]).map(|_| ())
    }

    /// Whether the `ctr run` of `id` still runs; its log when it ended.
    pub fn run_ended(&mut self, id: &str) -> Option<String> {
        let run = self.runs.iter_mut().find(|r| r.id == id)?;
        match run.child.try_wait() {
            Ok(None) => None,
            Ok(Some(st)) => Some(format!(
                "ctr run {id} exited {st}: {}",
                fs::read_to_string(&run.log).unwrap_or_default()
            )),
            Err(e) => Some(format!("ctr run {id}: {e}")),
        }
    }

    /// The host pid of task `id` once it is RUNNING.
    pub fn running_task_pid(&self, id: &str) -> anyhow::Result<Option<u32>> {
        let out = self.ctr_ok(&["task", "ls"])?;
        let pid = out.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3 && f[0] == id && f[2] == "RUNNING").then(|| f[1].parse::<u32>().ok())?
        });
        Ok(pid)
    }

    /// `ctr task exec` in container `id`; returns (success, stdout+stderr).
    pub fn exec(&mut self, id: &str, cmd: &[&str]) -> anyhow::Result<(bool, String)> {
        self.exec_seq += 1;
        let exec_id = format!("x{}", self.exec_seq);
        let mut args = vec!["task", "exec", "--exec-id", &exec_id, id];
        args.extend_from_slice(cmd);
        let out = self.ctr(&args, Duration::from_secs(15))?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        ))
    }

    /// Kills task `id` (SIGKILL) and waits for its `ctr run` to exit, which
    /// sends DEL and removes the container.
    pub fn stop(&mut self, id: &str, limit: Duration) -> anyhow::Result<ExitStatus> {
        let out = self.ctr(&["task", "kill", "-s", "SIGKILL", id], limit)?;
        let i = self
            .runs
            .iter()
            .position(|r| r.id == id)
            .context("no such run")?;
        let Some(st) = wait_child(&mut self.runs[i].child, limit) else {
            bail!(
                "ctr run {id} still runs {limit:?} after task kill ({}{})",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        self.runs.remove(i);
        Ok(st)
    }

    /// The log of `ctr run` for `id` (ctr only logs a failed DEL).
    pub fn run_log(&self, id: &str) -> String {
        fs::read_to_string(self.dir.join(format!("run-{id}.log"))).unwrap_or_default()
    }

    /// Every CNI call weft-cni got, in order.
    pub fn cni_calls(&self) -> Vec<CniCall> {
        fs::read_to_string(self.dir.join("cni-calls.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.splitn(5, '|').collect();
                (f.len() == 5).then(|| CniCall {
                    command: f[0].into(),
                    container_id: f[1].into(),
                    netns: f[2].into(),
                    ifname: f[3].into(),
                    args: f[4].into(),
                })
            })
            .collect()
    }

    /// Names of the files in the private libcni result cache.
    pub fn cached_results(&self) -> BTreeSet<String> {
        fs::read_dir(self.dir.join("var-lib-cni/results"))
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Logs worth printing when something failed.
    pub fn diagnostics(&self) -> String {
        let mut s = String::new();
        for f in ["containerd.log", "cni-calls.log", "weft-cni.log"] {
            let text = fs::read_to_string(self.dir.join(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            s += &format!("--- {f} (last lines)\n");
            for l in tail.into_iter().rev() {
                s += l;
                s.push('\n');
            }
        }
        s
    }

    /// Stops everything and removes the directory; returns what is left
    /// behind (empty when clean).
    pub fn shutdown(mut self) -> Vec<String> {
        self.teardown()
    }

    fn teardown(&mut self) -> Vec<String> {
        if self.done {
            return Vec::new();
        }
        self.done = true;
        let mut left = Vec::new();
        // 1. the foreground ctr runs: kill their tasks so they DEL and exit
        let runs = std::mem::take(&mut self.runs);
        for mut run in runs {
            if matches!(run.child.try_wait(), Ok(None)) {
                let _ = self.ctr(
                    &["task", "kill", "-s", "SIGKILL", &run.id],
                    Duration::from_secs(5),
                );
                if wait_child(&mut run.child, Duration::from_secs(10)).is_none() {
                    kill_pid(run.child.id(), "KILL");
                    let _ = wait_child(&mut run.child, Duration::from_secs(2));
                    left.push(format!("ctr run {} had to be killed", run.id));
                }
            }
        }
        // 2. tasks a failed `ctr run` left (after a failed ADD the task stays
        //    created, its `runc init` waiting), and containers
        if self
            .daemon
            .as_mut()
            .is_some_and(|d| matches!(d.try_wait(), Ok(None)))
        {
            let limit = Duration::from_secs(5);
            let tasks = self
                .ctr(&["task", "ls", "-q"], limit)
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for id in tasks.split_whitespace() {
                let _ = self.ctr(&["task", "delete", "-f", id], limit);
            }
            let containers = self
                .ctr(&["containers", "ls", "-q"], limit)
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for id in containers.split_whitespace() {
                let _ = self.ctr(&["containers", "rm", id], limit);
            }
        }
        // 3. containerd
        if let Some(mut d) = self.daemon.take() {
            if matches!(d.try_wait(), Ok(None)) {
                kill_pid(self.pid, "TERM");
                if wait_child(&mut d, Duration::from_secs(5)).is_none() {
                    kill_pid(self.pid, "KILL");
                    let _ = wait_child(&mut d, Duration::from_secs(2));
                }
            }
        }
        // 4. whatever still lives in our mount namespace: shims exit on their
        //    own once their container is gone; stragglers are killed
        if !self.mnt_ns.as_os_str().is_empty() && self.mnt_ns_hold.is_some() {
            let deadline = Instant::now() + Duration::from_secs(3);
            while !pids_in_mnt_ns(&self.mnt_ns).is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let stray = pids_in_mnt_ns(&self.mnt_ns);
            if !stray.is_empty() {
                left.push(format!(
                    "processes left in the private mount namespace, killed: {stray:?}"
                ));
                for pid in &stray {
                    kill_pid(*pid, "KILL");
                }
                let deadline = Instant::now() + Duration::from_secs(3);
                while !pids_in_mnt_ns(&self.mnt_ns).is_empty() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        // the namespace, and every mount in it, goes with its last reference
        self.mnt_ns_hold = None;
        // 5. container processes a dead shim left behind: only those in our
        //    cgroups, which then go (runc removes them when all is well)
        let cgroup_dirs = |g: &str| -> Vec<PathBuf> {
            fs::read_dir("/sys/fs/cgroup")
                .map(|rd| {
                    rd.filter_map(Result::ok)
                        .map(|c| c.path().join(g))
                        .filter(|p| p.is_dir())
                        .collect()
                })
                .unwrap_or_default()
        };
        for g in &self.cgroups {
            let dirs = cgroup_dirs(g);
            if dirs.is_empty() {
                continue;
            }
            left.push(format!("cgroup {g} left behind, removed"));
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                let procs: BTreeSet<u32> = dirs
                    .iter()
                    .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
                    .flat_map(|s| {
                        s.split_whitespace()
                            .filter_map(|p| p.parse().ok())
                            .collect::<Vec<u32>>()
                    })
                    .collect();
                for pid in &procs {
                    kill_pid(*pid, "KILL");
                }
                let gone = dirs
                    .iter()
                    .all(|d| !d.exists() || fs::remove_dir(d).is_ok());
                if gone {
                    break;
                }
                if Instant::now() >= deadline {
                    left.push(format!("cgroup {g}: could not remove {dirs:?}"));
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // 6. mounts: all were private to the namespace; none may show here
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = self.dir.to_string_lossy().into_owned();
        for l in mounts.lines().filter(|l| l.contains(&dir)) {
            left.push(format!("mount visible on the host: {l}"));
        }
        // 7. the host's CNI and containerd paths
        // (other engineers' tests may make /opt/cni or /var/lib/cni on this
        // host; containerd's own paths and our files must not appear)
        for (p, before) in HOST_PATHS.iter().zip(&self.host_before) {
            let ours = p.contains("containerd");
            if ours && !before && Path::new(p).exists() {
                left.push(format!("{p} appeared on the host"));
            }
        }
        for f in [
            "/etc/cni/net.d/10-weft.conflist",
            "/opt/cni/bin/weft-cni.real",
        ] {
            if Path::new(f).exists() {
                left.push(format!("{f} on the host"));
            }
        }
        let cached: Vec<String> = fs::read_dir("/var/lib/cni/results")
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.contains(&self.lab_name))
                    .collect()
            })
            .unwrap_or_default();
        if !cached.is_empty() {
            left.push(format!(
                "libcni results in the host's /var/lib/cni: {cached:?}"
            ));
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            left.push(format!("removing {}: {e}", self.dir.display()));
        }
        left
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for l in self.teardown() {
            eprintln!("containerd cleanup: {l}");
        }
    }
}
