//! Running things: `ip`, and weft-cni (or any CNI plugin) the way a runtime does.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Runs `ip <args>` in the root mount namespace and fails with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (iproute2); install it with apt-get install iproute2")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// What a CNI plugin run produced.
#[derive(Debug, Clone)]
pub struct CniOutcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CniOutcome {
    /// The stdout as JSON (the result or the error object).
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        if self.stdout.trim().is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&self.stdout)
            .with_context(|| format!("plugin printed non-JSON: {:?}", self.stdout))
    }
}

/// Executes `plugin` as a runtime does: CNI_* in the environment, the network
/// configuration on stdin, inside `host_netns` (the node). `args` is CNI_ARGS.
#[expect(
    clippy::too_many_arguments,
    reason = "a CNI call is this many things: plugin, path, netns, verb, ids, args, config"
)]
pub fn cni_exec(
    plugin: &Path,
    cni_path: &Path,
    host_netns: &Path,
    command: &str,
    container_id: &str,
    netns: &str,
    ifname: &str,
    args: &str,
    config: &[u8],
) -> anyhow::Result<CniOutcome> {
    let mut cmd = Command::new(plugin);
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container_id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !args.is_empty() {
        cmd.env("CNI_ARGS", args);
    }
    let start = Instant::now();
    let mut child = weft_datapath::netns::spawn_in(&mut cmd, host_netns)
        .with_context(|| format!("starting {}", plugin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // a plugin may exit without reading stdin (VERSION); that is not our error
        let _ = stdin.write_all(config);
    }
    let out = child.wait_with_output()?;
    Ok(CniOutcome {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    })
}

/// Starts `cmd` inside the network namespace at `netns` (`weft lab exec`).
pub fn spawn_in_netns(cmd: &mut Command, netns: &Path) -> std::io::Result<std::process::Child> {
    weft_datapath::netns::spawn_in(cmd, netns)
}
