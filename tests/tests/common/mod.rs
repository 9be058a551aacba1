//! Shared scaffolding of the whole-system tests: root check, unique lab
//! names, a guard that removes the lab also when a test fails.

#![allow(dead_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use weft_lab::{Lab, LabSpec};

pub mod kube;

/// True when the test may run; prints why not otherwise. CI runs as root, so
/// there these tests always run.
pub fn root_or_skip(test: &str) -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|v| v.split_whitespace().next() == Some("0"))
            })
        })
        .unwrap_or(false);
    if !root {
        eprintln!("skipping {test}: needs root (network namespaces); CI runs it as root");
    }
    root
}

/// Where weftd and weft-cni were built (`make test` builds them first).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("WEFT_BIN_DIR") {
        return dir.into();
    }
    let target = option_env!("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    let dir = target.join("debug");
    assert!(
        dir.join("weftd").exists() && dir.join("weft-cni").exists(),
        "weftd/weft-cni not built in {}; run `cargo build --bins` first (make test does)",
        dir.display()
    );
    dir
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A unique lab name: short tag + pid + sequence (tests run in parallel).
pub fn lab_name(tag: &str) -> String {
    format!(
        "wt{tag}{}x{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes its lab when dropped, pass or fail.
pub struct LabGuard(pub Lab);

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = Lab::down(&self.0.name) {
            eprintln!("cleanup of lab {}: {e:#}", self.0.name);
        }
    }
}

impl std::ops::Deref for LabGuard {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.0
    }
}

impl std::ops::DerefMut for LabGuard {
    fn deref_mut(&mut self) -> &mut Lab {
        &mut self.0
    }
}

pub fn lab(tag: &str, tweak: impl FnOnce(&mut LabSpec)) -> LabGuard {
    let mut spec = LabSpec::new(&lab_name(tag), &bin_dir());
    tweak(&mut spec);
    let lab = Lab::up(&spec, &mut |_| {}).expect("lab up");
    LabGuard(lab)
}

pub fn api_get<T: serde::de::DeserializeOwned>(lab: &Lab, path: &str) -> T {
    api_get_at(&lab.socket(), path)
}

/// GET `path` from the weftd serving `socket` (any node of a lab).
pub fn api_get_at<T: serde::de::DeserializeOwned>(socket: &std::path::Path, path: &str) -> T {
    let r = weft_api::http::call(socket, "GET", path, b"", Duration::from_secs(10))
        .expect("weftd answers");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).expect("reply decodes")
}

/// Node `i`'s `weft ipam check` finds nothing wrong.
pub fn assert_ipam_clean(lab: &Lab, i: usize) {
    let socket = lab.node(i).expect("node").socket.clone();
    let check: weft_api::IpamCheckReport = api_get_at(&socket, weft_api::paths::IPAM_CHECK);
    assert!(check.is_clean(), "node {i}: {check:?}");
}

pub fn endpoints(lab: &Lab) -> Vec<weft_api::EndpointInfo> {
    api_get(lab, weft_api::paths::ENDPOINTS)
}

pub fn ipam(lab: &Lab) -> weft_api::IpamView {
    api_get(lab, weft_api::paths::IPAM)
}

/// Runs `ip <args>` and returns stdout.
pub fn ip_out(args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn netns_name(path: &std::path::Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// Polls `f` until it is true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// Polls `f` every 100 ms until it gives a value, which it returns; fails
/// the test naming `what` once `limit` has passed.
pub fn within<T>(limit: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    within_every(Duration::from_millis(100), limit, what, f)
}

/// [`within`], polling every `every` (a fine poll where the test measures
/// the wait, a coarse one where each poll is a kubectl run).
pub fn within_every<T>(
    every: Duration,
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(every);
    }
}

pub fn v4(ips: &[IpAddr]) -> IpAddr {
    *ips.iter().find(|i| i.is_ipv4()).expect("an IPv4 address")
}

pub fn v6(ips: &[IpAddr]) -> IpAddr {
    *ips.iter().find(|i| i.is_ipv6()).expect("an IPv6 address")
}
