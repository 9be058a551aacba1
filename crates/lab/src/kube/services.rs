//! Who load-balances a lab cluster's Services: the real kube-proxy on every
//! node (the default), or weftd itself (`weft lab up --services weft`):
//! no kube-proxy, weftd with `--services on`, and a cgroup v2 directory per
//! node under a lab-private path (`<cgroup2>/weft-lab-<lab>/<node>`) that
//! weftd's socket-level programs attach to. The node's lab kubelet (its pods'
//! "containers") and every probe client of that node run in it; the
//! machine's root cgroup never gets a program.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::lab::Lab;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceProxy {
    /// The real kube-proxy (in the cluster's `proxy_mode`).
    #[default]
    KubeProxy,
    /// weftd `--services on`, kube-proxy absent.
    Weft,
}

impl fmt::Display for ServiceProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceProxy::KubeProxy => "kube-proxy",
            ServiceProxy::Weft => "weft",
        })
    }
}

impl FromStr for ServiceProxy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kube-proxy" => Ok(ServiceProxy::KubeProxy),
            "weft" => Ok(ServiceProxy::Weft),
            other => Err(format!(
                "services by {other:?}: use \"kube-proxy\" or \"weft\""
            )),
        }
    }
}

/// Where the unified (v2) cgroup hierarchy is mounted, from a mountinfo
/// text (`/sys/fs/cgroup` on a pure v2 host, `/sys/fs/cgroup/unified` on a
/// hybrid one).
pub fn cgroup2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        // fields: id parent maj:min root mountpoint opts... - fstype source
        let (left, right) = l.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        (fstype == "cgroup2").then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

pub fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    cgroup2_mount_in(&text).context(
        "no cgroup v2 hierarchy is mounted: weft's socket-level load balancing needs one \
         (mount -t cgroup2 none /sys/fs/cgroup/unified), or use --services kube-proxy",
    )
}

/// The lab's cgroup directory under the v2 mount.
pub fn lab_cgroup(mount: &Path, lab: &str) -> PathBuf {
    mount.join(format!("weft-lab-{lab}"))
}

/// Moves process `pid` into cgroup `dir`.
pub fn join(dir: &Path, pid: u32) -> anyhow::Result<()> {
    fs::write(dir.join("cgroup.procs"), pid.to_string())
        .with_context(|| format!("moving pid {pid} into cgroup {}", dir.display()))
}

impl Lab {
    /// Node `i`'s cgroup, when weftd load-balances this lab's Services.
    pub fn node_cgroup(&self, i: usize) -> Option<PathBuf> {
        let kube = self.kube()?;
        let root = kube.cgroup_dir.as_ref()?;
        Some(root.join(&self.nodes().get(i)?.name))
    }

    /// Who load-balances Services (kube-proxy when no cluster runs).
    pub fn service_proxy(&self) -> ServiceProxy {
        self.kube().map(|k| k.services).unwrap_or_default()
    }

    /// Moves the calling process into node `i`'s cgroup (a probe client of
    /// that node or one of its pods); nothing when the lab has none.
    pub fn enter_node_cgroup(&self, i: usize) -> anyhow::Result<()> {
        match self.node_cgroup(i) {
            Some(dir) => join(&dir, std::process::id()),
            None => Ok(()),
        }
    }

    /// Moves the calling process into the cgroup of the node that `spec`
    /// (`node:NODE`, `NS/POD`) is on, when the lab has per-node cgroups.
    pub fn enter_cgroup_of(&self, spec: &str) -> anyhow::Result<()> {
        if self.kube().and_then(|k| k.cgroup_dir.as_ref()).is_none() {
            return Ok(());
        }
        let node = if let Some(n) = spec.strip_prefix("node:") {
            crate::kubelet::find_node(self, n)?
        } else if let Some((ns, pod)) = spec.split_once('/') {
            crate::kubelet::find_pod(self, ns, pod)?.0
        } else {
            return Ok(());
        };
        let i = self
            .nodes()
            .iter()
            .position(|n| n.name == node.name)
            .context("node not in the lab")?;
        self.enter_node_cgroup(i)
    }
}

/// A bpffs of the lab's own (`<lab dir>/bpffs`), where each weftd pins its
/// Service maps (`--bpf-pin-dir <bpffs>/<node>`): a restarted weftd finds
/// its maps, IDs and NAT state. Mounted by `up`, unmounted by `down`.
pub(crate) fn mount_bpffs(lab: &Lab) -> anyhow::Result<PathBuf> {
    let dir = lab.dir.join("bpffs");
    fs::create_dir_all(&dir)?;
    let ok = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(&dir)
        .status()
        .context("running mount")?
        .success();
    if !ok {
        bail!("mounting a bpffs at {} failed", dir.display());
    }
    Ok(dir)
}

pub(crate) fn unmount_bpffs(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    // lazily: a weftd may still hold maps; the pins go with the mount
    let ok = std::process::Command::new("umount")
        .arg("-l")
        .arg(dir)
        .status()
        .context("running umount")?
        .success();
    if !ok {
        bail!("unmounting the lab's bpffs at {} failed", dir.display());
    }
    Ok(())
}

impl Lab {
    /// Node `i`'s pin directory, when the lab has a bpffs.
    pub fn node_pin_dir(&self, i: usize) -> Option<PathBuf> {
        let kube = self.kube()?;
        Some(kube.bpffs.as_ref()?.join(&self.nodes().get(i)?.name))
    }
}

/// Creates the lab's cgroup and one per node; returns the lab's.
pub(crate) fn create(lab: &Lab) -> anyhow::Result<PathBuf> {
    let root = lab_cgroup(&cgroup2_mount()?, &lab.name);
    for n in lab.nodes() {
        let dir = root.join(&n.name);
        fs::create_dir_all(&dir).with_context(|| format!("creating cgroup {}", dir.display()))?;
    }
    Ok(root)
}

/// Removes the lab's cgroups (their processes must have ended). A cgroup
/// that still holds a process stays, and the error names it.
pub(crate) fn remove(root: &Path) -> anyhow::Result<()> {
    if !root.exists() {
        return Ok(());
    }
    let mut left = Vec::new();
    for e in fs::read_dir(root)?.filter_map(Result::ok) {
        if e.path().is_dir() {
            if let Err(err) = fs::remove_dir(e.path()) {
                left.push(format!("{} ({err})", e.path().display()));
            }
        }
    }
    if let Err(err) = fs::remove_dir(root) {
        left.push(format!("{} ({err})", root.display()));
    }
    if !left.is_empty() {
        bail!(
            "cgroups left (a lab process still runs in them; `cat <dir>/cgroup.procs` names it): {}",
            left.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v2_mount_is_found_on_hybrid_and_pure_hosts() {
        let hybrid = "30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n\
                      32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            cgroup2_mount_in(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "29 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount_in(pure),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_mount_in("1 2 0:1 / / rw - ext4 /dev/sda rw\n"),
            None
        );
    }

    #[test]
    fn a_labs_cgroups_sit_under_its_own_directory() {
        assert_eq!(
            lab_cgroup(Path::new("/sys/fs/cgroup/unified"), "wtsv1x1"),
            PathBuf::from("/sys/fs/cgroup/unified/weft-lab-wtsv1x1")
        );
    }

    #[test]
    fn service_proxies_parse_and_print() {
        assert_eq!("weft".parse::<ServiceProxy>(), Ok(ServiceProxy::Weft));
        assert_eq!(ServiceProxy::default().to_string(), "kube-proxy");
        assert!("ipvs".parse::<ServiceProxy>().is_err());
    }
}
