//! A private podman 4 (CNI backend) driven inside a lab's node namespace.
//!
//! Everything podman writes lives under one directory of the lab
//! (`<lab dir>/podman`): containers.conf, storage.conf, graphroot, runroot,
//! tmp dir, the CNI config dir and the image's rootfs. podman runs through
//! `nsenter --net=<node netns>` (only the network namespace changes: its
//! overlay mounts and the `/run/netns/netns-*` files it makes are visible to
//! this process, so the guard can check and remove them). The guard's `Drop`
//! removes containers, storage, mounts under the directory and any process
//! whose command line names the directory (conmon), pass or fail.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::Duration;

use weft_lab::Lab;

/// The CNI network the conflist defines.
pub const NETWORK: &str = "weft";
/// The image `import_busybox` makes.
pub const IMAGE: &str = "localhost/weft-busybox:test";
/// What `busybox httpd -h /www` serves at `/index.html` in that image.
pub const PAGE: &str = "weft-podman-ok";
/// Applets the image links to /bin/busybox.
const APPLETS: [&str; 8] = ["sh", "sleep", "httpd", "wget", "ip", "cat", "timeout", "nc"];
/// Upper bound of one podman command (bounded waits only).
const PODMAN_TIMEOUT: &str = "40";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Fails (not skips) when podman is missing: CI installs it
/// (scripts/setup.sh), so a missing podman is a broken machine.
pub fn require_podman() {
    let out = Command::new("podman").arg("--version").output();
    match out {
        Ok(o) if o.status.success() => {
            eprintln!("using {}", String::from_utf8_lossy(&o.stdout).trim());
        }
        Ok(o) => panic!(
            "podman --version failed: {}; scripts/setup.sh installs podman, conmon and runc",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "podman is not installed ({e}); scripts/setup.sh installs podman, conmon and runc (CI runs it)"
        ),
    }
    for tool in [
        "conmon",
        "runc",
        "nsenter",
        "busybox",
        "tar",
        "iptables-save",
    ] {
        let found = std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .chain(PATH.split(':'))
            .any(|d| Path::new(d).join(tool).exists());
        assert!(
            found,
            "{tool} is not installed; scripts/setup.sh installs it"
        );
    }
}

pub struct Podman {
    pub dir: PathBuf,
    node_netns: PathBuf,
    /// Network namespaces podman made for our containers (SandboxKey).
    sandboxes: Mutex<Vec<PathBuf>>,
    /// Ids of our containers (for libcni's result cache).
    ids: Mutex<Vec<String>>,
    cleaned: bool,
}

impl Podman {
    /// Writes a private podman configuration for `lab` with the conflist
    /// `weft-cni` (+ `chain`, e.g. portmap) and imports the busybox image.
    pub fn new(lab: &Lab, chain: &[serde_json::Value]) -> Podman {
        let dir = lab.dir.join("podman");
        let p = Podman {
            dir: dir.clone(),
            node_netns: lab.node_netns.clone(),
            sandboxes: Mutex::new(Vec::new()),
            ids: Mutex::new(Vec::new()),
            cleaned: false,
        };
        for sub in ["root", "runroot", "tmp", "cni", "rootfs/bin", "rootfs/www"] {
            std::fs::create_dir_all(dir.join(sub)).expect("podman dirs");
        }
        let d = dir.display();
        std::fs::write(
            dir.join("storage.conf"),
            format!("[storage]\ndriver = \"overlay\"\ngraphroot = \"{d}/root\"\nrunroot = \"{d}/runroot\"\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                r#"[containers]
default_ulimits = ["nofile=1024:20000", "nproc=1024:1024"]

[network]
network_backend = "cni"
network_config_dir = "{d}/cni"
cni_plugin_dirs = ["{bin}", "{reference}"]
default_network = "{NETWORK}"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
tmp_dir = "{d}/tmp"
static_dir = "{d}/root/libpod"
volume_path = "{d}/root/volumes"
image_copy_tmp_dir = "{d}/tmp"
"#,
                bin = lab.bin_dir.display(),
                reference = weft_lab::REFERENCE_PLUGINS,
            ),
        )
        .unwrap();
        let mut plugins = vec![serde_json::json!({
            "type": "weft-cni",
            "agentSocket": lab.socket(),
            "spoolDir": lab.spool_dir(),
            "ipFamilies": ["ipv4", "ipv6"],
            "logFile": dir.join("weft-cni.log"),
            "logLevel": "debug",
        })];
        plugins.extend(chain.iter().cloned());
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": plugins,
        });
        std::fs::write(
            dir.join("cni").join(format!("{NETWORK}.conflist")),
            serde_json::to_vec_pretty(&conflist).unwrap(),
        )
        .unwrap();
        p
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env("PATH", PATH)
            .env_remove("CONTAINERS_REGISTRIES_CONF")
            .env_remove("XDG_RUNTIME_DIR");
    }

    /// A command run inside the node's network namespace, bounded in time.
    pub fn in_node(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", PODMAN_TIMEOUT, "nsenter"])
            .arg(format!("--net={}", self.node_netns.display()))
            .arg("--")
            .arg(program)
            .args(args);
        self.env(&mut cmd);
        cmd
    }

    pub fn try_podman(&self, args: &[&str]) -> Output {
        self.in_node("podman", args).output().expect("podman runs")
    }

    /// Runs podman, panics with its output on failure, returns stdout.
    pub fn podman(&self, args: &[&str]) -> String {
        let out = self.try_podman(args);
        assert!(
            out.status.success(),
            "podman {} failed ({}): {}{}\nweft-cni log:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.cni_log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn cni_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("weft-cni.log")).unwrap_or_default()
    }

    /// A busybox-static rootfs (busybox + applet links + /www/index.html),
    /// tarred and `podman import`ed as [`IMAGE`].
    pub fn import_busybox(&self) {
        let root = self.dir.join("rootfs");
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("busybox-static installed (scripts/setup.sh)");
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        std::fs::write(root.join("www/index.html"), PAGE).unwrap();
        let tar = self.dir.join("rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success(), "tar of the rootfs");
        self.podman(&["import", "-q", &tar.to_string_lossy(), IMAGE]);
    }

    /// `podman run -d` on the weft network; returns the container's id.
    pub fn run_detached(&self, name: &str, extra: &[&str], command: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--name", name, "--network", NETWORK];
        args.extend_from_slice(extra);
        args.push(IMAGE);
        args.extend_from_slice(command);
        let id = self.podman(&args).trim().to_string();
        self.ids.lock().unwrap().push(id.clone());
        let info = self.inspect(name);
        if let Some(key) = info["NetworkSettings"]["SandboxKey"].as_str() {
            if !key.is_empty() {
                self.sandboxes.lock().unwrap().push(key.into());
            }
        }
        id
    }

    /// `podman inspect <name>`, the one object.
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.podman(&["inspect", name]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("inspect is json");
        v[0].clone()
    }

    pub fn sandboxes(&self) -> Vec<PathBuf> {
        self.sandboxes.lock().unwrap().clone()
    }

    pub fn ids(&self) -> Vec<String> {
        self.ids.lock().unwrap().clone()
    }

    /// Processes whose command line names our directory (conmon, a podman
    /// cleanup), as (pid, command line); zombies excluded.
    pub fn processes(&self) -> Vec<(u32, String)> {
        let needle = self.dir.to_string_lossy().into_owned();
        let me = std::process::id();
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmdline.contains(&needle) && weft_lab::pid_alive(pid) {
                out.push((pid, cmdline));
            }
        }
        out
    }

    /// Mount points under our directory, deepest first.
    pub fn mounts(&self) -> Vec<PathBuf> {
        mounts_under(&self.dir)
    }

    /// Cgroups podman (cgroupfs manager) left for our containers.
    pub fn cgroups(&self) -> Vec<PathBuf> {
        let ids = self.ids();
        let mut out = Vec::new();
        for ctl in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            for id in &ids {
                let p = ctl
                    .path()
                    .join("libpod_parent")
                    .join(format!("libpod-{id}"));
                if p.exists() {
                    out.push(p);
                }
            }
        }
        out
    }

    /// Files of libcni's result cache naming our containers.
    pub fn cni_cache(&self) -> Vec<String> {
        let ids = self.ids();
        std::fs::read_dir("/var/lib/cni/results")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| ids.iter().any(|id| f.contains(id.as_str())))
            .collect()
    }

    /// Everything of ours still on the machine, described.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(
            self.mounts()
                .iter()
                .map(|m| format!("mount {}", m.display())),
        );
        out.extend(
            self.processes()
                .into_iter()
                .map(|(pid, c)| format!("process {pid}: {c}")),
        );
        out.extend(
            self.sandboxes()
                .iter()
                .filter(|s| s.exists())
                .map(|s| format!("netns {}", s.display())),
        );
        out.extend(
            self.cgroups()
                .iter()
                .map(|c| format!("cgroup {}", c.display())),
        );
        out.extend(
            self.cni_cache()
                .into_iter()
                .map(|f| format!("libcni cache /var/lib/cni/results/{f}")),
        );
        if self.dir.exists() {
            out.push(format!("directory {}", self.dir.display()));
        }
        out
    }

    /// Removes everything: containers (no grace period), storage
    /// (`podman system reset`), then by force what is left: processes named
    /// after our directory (by pid), mounts under it, podman's netns files
    /// of our containers, libcni cache files of our containers, the
    /// directory. Returns what was still there afterwards.
    pub fn shutdown(&mut self) -> Vec<String> {
        self.cleaned = true;
        if self.dir.join("containers.conf").exists() {
            let _ = self.try_podman(&["rm", "-a", "-f", "-t", "0"]);
            let _ = self.try_podman(&["system", "reset", "-f"]);
        }
        for (pid, _) in self.processes() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = wait_until(Duration::from_secs(5), || self.processes().is_empty());
        for m in self.mounts() {
            let ok = Command::new("umount")
                .arg(&m)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").arg("-l").arg(&m).status();
            }
        }
        for s in self.sandboxes() {
            if s.exists() {
                let _ = Command::new("umount").arg(&s).status();
                let _ = std::fs::remove_file(&s);
            }
        }
        for f in self.cni_cache() {
            let _ = std::fs::remove_file(Path::new("/var/lib/cni/results").join(f));
        }
        if self.mounts().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        self.leftovers()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if !self.cleaned {
            let left = self.shutdown();
            if !left.is_empty() {
                eprintln!("podman cleanup left: {left:#?}");
            }
        }
    }
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Mount points at or under `dir` (from /proc/self/mountinfo), deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    out.dedup();
    out
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The nat table of a namespace.
pub fn nat_rules(netns: &Path) -> String {
    Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["--", "iptables-save", "-t", "nat"])
        .env("PATH", PATH)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `busybox wget` of `url` from inside `netns` (bounded); stdout on success.
pub fn fetch_from(netns: &Path, url: &str) -> Result<String, String> {
    let out = Command::new("timeout")
        .args(["-k", "2", "10", "nsenter"])
        .arg(format!("--net={}", netns.display()))
        .args(["--", "busybox", "wget", "-q", "-O-", url])
        .env("PATH", PATH)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "wget {url} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
