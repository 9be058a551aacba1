//! What the shim tests share: running the built weft-cni with an environment
//! and stdin, private temporary directories, configs and CNI_* environments.

#![allow(dead_code, unused_imports)] // each test binary uses part of it

pub use std::io::Write;
pub use std::os::unix::net::UnixListener;
pub use std::path::{Path, PathBuf};
pub use std::process::{Command, Stdio};
pub use std::sync::mpsc;
pub use std::time::{Duration, Instant};

pub use serde_json::{json, Value};
pub use weft_api::{AddRequest, CheckRequest, DelRequest, GcRequest, StatusRequest};

pub const BIN: &str = env!("CARGO_BIN_EXE_weft-cni");

pub struct Out {
    pub code: i32,
    pub stdout: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not json ({e}): {:?}", self.stdout))
    }
    /// Asserts a CNI error with `code` and returns it.
    pub fn error(&self, code: u64) -> Value {
        assert_eq!(self.code, 1, "stdout: {}", self.stdout);
        let v = self.json();
        assert_eq!(v["code"], code, "{v}");
        let msg = v["msg"].as_str().unwrap();
        assert!(!msg.is_empty() && !msg.ends_with('.'), "{msg:?}");
        assert!(v["cniVersion"].is_string(), "{v}");
        v
    }
}

pub fn run(env: &[(&str, &str)], stdin: &[u8]) -> Out {
    let mut child = Command::new(BIN)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.code().is_some(),
        "killed by a signal: {:?}",
        out.status
    );
    let stdout = String::from_utf8(out.stdout).expect("stdout is utf-8");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") || env.iter().any(|(k, _)| *k == "WEFT_CNI_TEST_PANIC"),
        "{stderr}"
    );
    Out {
        code: out.status.code().unwrap(),
        stdout,
    }
}

/// A scratch directory removed when dropped.
pub struct TmpDir(pub PathBuf);

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for TmpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

pub fn tmpdir(name: &str) -> TmpDir {
    let d = std::env::temp_dir().join(format!("wcni-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TmpDir(d)
}

pub fn conf(version: &str, extra: Value) -> Vec<u8> {
    let mut c = json!({"cniVersion": version, "name": "weft", "type": "weft-cni"});
    if let Value::Object(m) = extra {
        for (k, v) in m {
            c[k] = v;
        }
    }
    serde_json::to_vec(&c).unwrap()
}

pub fn attach_env<'a>(cmd: &'a str, overrides: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("CNI_COMMAND", cmd),
        ("CNI_CONTAINERID", "0123456789abcdef"),
        ("CNI_NETNS", "/var/run/netns/test"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_UID=uid-1",
        ),
    ];
    for (k, v) in overrides {
        env.retain(|(ek, _)| ek != k);
        if !v.is_empty() || *k == "CNI_IFNAME" || *k == "CNI_NETNS" {
            env.push((k, v));
        }
    }
    env
}

pub const VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

pub fn no_agent(name: &str) -> (TmpDir, String) {
    let dir = tmpdir(name);
    let sock = dir.join("weftd.sock").display().to_string();
    (dir, sock)
}
