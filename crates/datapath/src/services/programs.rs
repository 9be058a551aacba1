//! [`ServicePrograms`]: loading the Service programs and their maps, and
//! attaching them (socket hooks to a cgroup, the NodePort pair to devices).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use weft_bpf::{
    cgroup_detach_named, cgroup_replace, load_with, tcx_attach, tcx_detach_named, LoadOptions,
    Loaded, PinOutcome, ProgKind, Program, SockAddrHook, TcxDirection,
};

use super::{ServiceError, ServiceMaps};

/// The socket-level load balancer (built by build.rs from `bpf/sock_lb.bpf.c`).
pub static SOCK_LB_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sock_lb.o"));
/// The NodePort translator (from `bpf/nodeport.bpf.c`).
pub static NODEPORT_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/nodeport.o"));

/// The socket programs and the cgroup hook each goes to.
pub const SOCK_PROGRAMS: [(&str, SockAddrHook); 8] = [
    ("weft_sock_connect4", SockAddrHook::Connect4),
    ("weft_sock_connect6", SockAddrHook::Connect6),
    ("weft_sock_sendmsg4", SockAddrHook::Sendmsg4),
    ("weft_sock_sendmsg6", SockAddrHook::Sendmsg6),
    ("weft_sock_recvmsg4", SockAddrHook::Recvmsg4),
    ("weft_sock_recvmsg6", SockAddrHook::Recvmsg6),
    ("weft_sock_peer4", SockAddrHook::Getpeername4),
    ("weft_sock_peer6", SockAddrHook::Getpeername6),
];
/// At the ingress of external devices: new flows, and replies to SNAT.
pub const NODEPORT_IN: &str = "weft_nodeport_in";
/// At their egress: replies of flows whose source was kept.
pub const NODEPORT_OUT: &str = "weft_nodeport_out";

/// How [`ServicePrograms::load`] treats the maps.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServiceProgramOptions<'a> {
    /// Where the pinned maps live (weftd's `--bpf-pin-dir`); `None`: fresh
    /// maps, gone with this value (tests).
    pub pin_dir: Option<&'a Path>,
    /// An object whose maps of the same name to use (the fast path's, so
    /// flow events go to the one ring buffer weftd reads).
    pub share: Option<&'a Loaded>,
}

/// The loaded Service programs and maps, and where this value attached them.
#[derive(Debug)]
pub struct ServicePrograms {
    sock: Arc<Loaded>,
    nodeport: Loaded,
    cgroup: Option<PathBuf>,
    devices: BTreeSet<u32>,
}

impl ServicePrograms {
    /// Loads both objects (they share one set of maps; pinned maps re-used
    /// when their layout matches). Nothing is attached yet.
    pub fn load(opts: &ServiceProgramOptions<'_>) -> Result<Self, ServiceError> {
        let sock = load_with(
            SOCK_LB_OBJECT,
            &LoadOptions {
                pin_dir: opts.pin_dir,
                share: opts.share,
            },
        )?;
        let nodeport = load_with(
            NODEPORT_OBJECT,
            &LoadOptions {
                pin_dir: opts.pin_dir,
                share: Some(&sock),
            },
        )?;
        Ok(ServicePrograms {
            sock: Arc::new(sock),
            nodeport,
            cgroup: None,
            devices: BTreeSet::new(),
        })
    }

    /// The maps, for weftd's reconciler (shares the kernel maps).
    pub fn maps(&self) -> ServiceMaps {
        ServiceMaps::new(Arc::clone(&self.sock))
    }

    /// A program by function name ([`SOCK_PROGRAMS`], [`NODEPORT_IN`],
    /// [`NODEPORT_OUT`]), e.g. for BPF_PROG_TEST_RUN.
    pub fn program(&self, name: &str) -> Result<&Program, ServiceError> {
        Ok(self
            .sock
            .program(name)
            .or_else(|_| self.nodeport.program(name))?)
    }

    /// A map of either object by name (`weft_lb_nat`, `weft_flows`, ...).
    pub fn map(&self, name: &str) -> Result<&weft_bpf::Map, ServiceError> {
        Ok(self.nodeport.map(name).or_else(|_| self.sock.map(name))?)
    }

    /// The pinned maps and what this load did with each.
    pub fn pinned(&self) -> Vec<(String, PinOutcome)> {
        self.nodeport
            .maps()
            .iter()
            .filter_map(|m| Some((m.name().to_string(), m.pin_outcome()?)))
            .collect()
    }

    /// Attaches the socket programs to the cgroup v2 directory `root`
    /// (replacing an earlier agent's there): every process in it or below
    /// is load-balanced at connect/sendmsg. weftd gives the cgroup2 mount's
    /// root ([`default_cgroup_root`]); tests give a private directory and
    /// never the machine's root.
    pub fn attach_cgroup(&mut self, root: &Path) -> Result<(), ServiceError> {
        if !root.join("cgroup.procs").exists() {
            return Err(ServiceError::NotCgroup2(root.display().to_string()));
        }
        for (name, _) in SOCK_PROGRAMS {
            cgroup_replace(root, self.sock.program(name)?)?;
        }
        self.cgroup = Some(root.to_path_buf());
        Ok(())
    }

    /// Attaches the NodePort pair to device `ifindex` (tcx ingress and
    /// egress, replacing an earlier agent's). Must run in the node netns.
    pub fn attach_device(&mut self, ifindex: u32) -> Result<(), ServiceError> {
        tcx_attach(
            ifindex,
            TcxDirection::Ingress,
            self.nodeport.program(NODEPORT_IN)?,
        )?;
        tcx_attach(
            ifindex,
            TcxDirection::Egress,
            self.nodeport.program(NODEPORT_OUT)?,
        )?;
        self.devices.insert(ifindex);
        Ok(())
    }

    /// Where this value attached the socket programs, if anywhere.
    pub fn cgroup(&self) -> Option<&Path> {
        self.cgroup.as_deref()
    }

    /// The devices this value attached the NodePort pair to.
    pub fn devices(&self) -> &BTreeSet<u32> {
        &self.devices
    }

    /// Takes every program this value attached off its hooks.
    pub fn detach(&mut self) -> Result<usize, ServiceError> {
        let mut n = 0;
        if let Some(root) = self.cgroup.take() {
            n += detach_cgroup(&root)?;
        }
        let devices: Vec<u32> = std::mem::take(&mut self.devices).into_iter().collect();
        n += detach_devices(&devices)?;
        Ok(n)
    }
}

/// Takes weft's socket programs (any agent's) off the cgroup at `root`
/// (`--services off`). Returns how many were detached.
pub fn detach_cgroup(root: &Path) -> Result<usize, ServiceError> {
    let mut n = 0;
    for (name, hook) in SOCK_PROGRAMS {
        n += cgroup_detach_named(root, ProgKind::SockAddr(hook), name)?;
    }
    Ok(n)
}

/// Takes weft's NodePort programs off `ifindexes`. Must run in the node netns.
pub fn detach_devices(ifindexes: &[u32]) -> Result<usize, ServiceError> {
    let mut n = 0;
    for &i in ifindexes {
        n += tcx_detach_named(i, TcxDirection::Ingress, NODEPORT_IN)?;
        n += tcx_detach_named(i, TcxDirection::Egress, NODEPORT_OUT)?;
    }
    Ok(n)
}

/// The production cgroup root: where the cgroup2 hierarchy is mounted
/// (`/sys/fs/cgroup` on a unified-hierarchy host), from /proc/self/mountinfo.
pub fn default_cgroup_root() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    cgroup2_mount(&text)
}

/// The first cgroup2 mount point in a mountinfo text.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount() {
        let mi = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                  30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(mi), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(cgroup2_mount("22 1 0:21 / /proc rw - proc proc rw\n"), None);
    }

    #[test]
    fn objects_parse_with_every_program_and_shared_maps_alike() {
        let sock = weft_bpf::parse_object(SOCK_LB_OBJECT).unwrap();
        let np = weft_bpf::parse_object(NODEPORT_OBJECT).unwrap();
        let names: Vec<&str> = sock.program_names().collect();
        for (n, hook) in SOCK_PROGRAMS {
            assert!(names.contains(&n), "{n}");
            let spec = sock.programs().iter().find(|p| p.name == n).unwrap();
            assert_eq!(spec.kind, ProgKind::SockAddr(hook), "{n}");
        }
        let np_names: Vec<&str> = np.program_names().collect();
        assert_eq!(np_names, [NODEPORT_IN, NODEPORT_OUT]);
        let sdefs: std::collections::HashMap<_, _> = sock.map_defs().collect();
        for (name, def) in np.map_defs() {
            if let Some(s) = sdefs.get(name) {
                assert_eq!(*s, def, "{name} is defined alike in both objects");
            }
        }
    }
}
