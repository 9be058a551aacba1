//! Scaffolding shared by the privileged test binaries: the root check, and
//! named network namespaces that are deleted on drop, also on failure.

// each test binary uses part of this
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Compiling C test programs for BPF, shared with the loader crate.
#[path = "../../../bpf/tests/common/clang.rs"]
pub mod clang;

use weft_datapath::netns::{run_in, spawn_in};
use weft_datapath::LinuxDatapath;

/// Namespace prefix per test binary (`wdp-…` for privileged.rs, `wdo-…` for
/// overlay.rs), so binaries running side by side never share a name.
fn prefix() -> &'static str {
    match env!("CARGO_CRATE_NAME") {
        "overlay" => "wdo",
        "bpf_loader" => "wbl",
        "policy_netns" => "wdn",
        "policy_nodes" => "wdm",
        _ => "wdp",
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[macro_export]
macro_rules! need_root {
    ($name:expr) => {
        if !is_root() {
            println!("skipping {}: needs root", $name);
            return;
        }
    };
}

/// A named netns, deleted on drop.
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(test: &str, role: &str) -> Ns {
        let name = format!("{}-{}-{test}-{role}", prefix(), std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let ns = Ns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `ip -n <ns> args`, asserting success; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    /// `ip -n <ns> args`, returning whether it succeeded.
    pub fn ip_ok(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// Runs a command inside the netns (via the crate's own spawn_in).
    pub fn exec(&self, prog: &str, args: &[&str]) -> (bool, String) {
        let mut cmd = Command::new(prog);
        cmd.args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = spawn_in(&mut cmd, &self.path())
            .expect("spawn_in")
            .wait_with_output()
            .expect("wait");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// A veth pair with both ends in this netns, up (stands in for a dummy
    /// device, which not every kernel has).
    pub fn veth_pair(&self, a: &str, b: &str, mtu: u32) {
        let mtu = mtu.to_string();
        self.ip(&[
            "link", "add", a, "mtu", &mtu, "type", "veth", "peer", "name", b, "mtu", &mtu,
        ]);
        self.ip(&["link", "set", a, "up"]);
        self.ip(&["link", "set", b, "up"]);
    }

    pub fn bridge(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", &self.name];
        a.extend_from_slice(args);
        run("bridge", &a)
    }

    pub fn datapath(&self) -> LinuxDatapath {
        run_in(&self.path(), LinuxDatapath::new)
            .expect("enter node netns")
            .expect("LinuxDatapath::new")
    }

    /// The TX (bytes, packets) counters of a device, from this netns's
    /// /proc/net/dev.
    pub fn tx(&self, dev: &str) -> (u64, u64) {
        let dev_line = format!("{dev}:");
        let text = run_in(&self.path(), || {
            std::fs::read_to_string("/proc/thread-self/net/dev").unwrap()
        })
        .unwrap();
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&dev_line))
            .unwrap_or_else(|| panic!("{dev} not in {text}"));
        // rx: bytes packets errs drop fifo frame compressed multicast, tx: bytes packets
        let fields: Vec<&str> = line[dev_line.len()..].split_whitespace().collect();
        (fields[8].parse().unwrap(), fields[9].parse().unwrap())
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

pub fn run(prog: &str, args: &[&str]) -> String {
    let out = Command::new(prog).args(args).output().expect(prog);
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Listener in `server`, connect from `client` (bounded), `payload` one way
/// and a pong back; an error instead of a panic when the path is down.
pub fn tcp_roundtrip(
    server: &Path,
    client: &Path,
    addr: SocketAddr,
    payload: &[u8],
) -> Result<(), String> {
    let listener = run_in(server, move || TcpListener::bind(addr))
        .unwrap()
        .map_err(|e| format!("bind {addr}: {e}"))?;
    let mut c = run_in(client, move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(3))
    })
    .unwrap()
    .map_err(|e| format!("connect {addr}: {e}"))?;
    listener.set_nonblocking(true).unwrap();
    let mut s = None;
    for _ in 0..300 {
        match listener.accept() {
            Ok((st, _)) => {
                s = Some(st);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => return Err(format!("accept {addr}: {e}")),
        }
    }
    let mut s = s.ok_or_else(|| format!("no connection accepted on {addr}"))?;
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    c.write_all(payload)
        .map_err(|e| format!("write {addr}: {e}"))?;
    let mut got = vec![0; payload.len()];
    s.read_exact(&mut got)
        .map_err(|e| format!("read {addr}: {e}"))?;
    assert_eq!(got, payload);
    s.write_all(b"pong").unwrap();
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf)
        .map_err(|e| format!("read {addr}: {e}"))?;
    assert_eq!(&buf, b"pong");
    Ok(())
}
