//! `weft install`: puts weft on a single host: the binaries, weft-cni where
//! runtimes look for CNI plugins, the conflist, and the systemd unit.
//! Idempotent; an existing file that differs is left alone unless --force.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;

use crate::output::outln;

const CONFLIST: &str = include_str!("../../../deploy/10-weft.conflist");
const UNIT: &str = include_str!("../../../deploy/weftd.service");
/// Where Debian's containernetworking-plugins put the reference plugins.
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

#[derive(Args)]
pub struct InstallArgs {
    /// Install under this root instead of / (like DESTDIR; for packaging and tests).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Where weftd, weft and weft-cni go.
    #[arg(long, default_value = "/usr/local/bin")]
    bin_dir: PathBuf,
    /// Where container runtimes look for CNI plugins.
    #[arg(long, default_value = "/opt/cni/bin")]
    cni_bin_dir: PathBuf,
    /// Where container runtimes look for network configs.
    #[arg(long, default_value = "/etc/cni/net.d")]
    cni_conf_dir: PathBuf,
    /// Where the systemd unit goes.
    #[arg(long, default_value = "/etc/systemd/system")]
    systemd_dir: PathBuf,
    /// Where the binaries are now (default: beside this weft).
    #[arg(long)]
    from: Option<PathBuf>,
    /// Replace existing files that differ.
    #[arg(long)]
    force: bool,
    /// Say what would be done, do nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only the CNI side: weft-cni and the conflist (and the chained
    /// reference plugins, copied, when the CNI bin dir lacks them); what the
    /// DaemonSet's init container runs, weftd itself running in the pod.
    #[arg(long)]
    cni_only: bool,
    /// Write this conflist instead of weft's default (e.g. from a ConfigMap).
    #[arg(long)]
    conflist: Option<PathBuf>,
}

fn under(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// The conflist as installed: the shipped one with `agentSocket` set to the
/// socket weftd will serve (`weft --socket X install`).
fn conflist(socket: &Path) -> anyhow::Result<String> {
    let mut list: serde_json::Value = serde_json::from_str(CONFLIST)?;
    let weft = list["plugins"]
        .get_mut(0)
        .and_then(|p| p.as_object_mut())
        .context("the shipped conflist has no first plugin")?;
    weft.insert(
        "agentSocket".into(),
        serde_json::Value::String(socket.display().to_string()),
    );
    Ok(serde_json::to_string_pretty(&list)? + "\n")
}

/// The plugins the conflist chains after weft-cni (linked from Debian's
/// directory so runtimes that look only in the CNI bin dir find them).
fn chained_plugins() -> Vec<String> {
    let list: serde_json::Value = serde_json::from_str(CONFLIST).unwrap_or_default();
    list["plugins"]
        .as_array()
        .map(|a| {
            a.iter()
                .skip(1)
                .filter_map(|p| p["type"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The unit as installed: weftd told about a socket other than its default.
fn unit(socket: &Path) -> String {
    if socket == Path::new(weft_api::DEFAULT_SOCKET) {
        return UNIT.to_string();
    }
    UNIT.replace(
        "ExecStart=/usr/local/bin/weftd ",
        &format!(
            "ExecStart=/usr/local/bin/weftd --socket {} ",
            socket.display()
        ),
    )
}

pub fn run(a: InstallArgs, socket: &Path) -> anyhow::Result<ExitCode> {
    if !socket.is_absolute() {
        bail!(
            "--socket {} is not an absolute path; runtimes run weft-cni from another directory",
            socket.display()
        );
    }
    let from = match &a.from {
        Some(d) => d.clone(),
        None => crate::lab_cmd::default_bin_dir()?,
    };
    let conflist_bytes = match &a.conflist {
        Some(path) => read_conflist(path)?,
        None => conflist(socket)?.into_bytes(),
    };
    let bins: &[&str] = if a.cni_only {
        &["weft-cni"]
    } else {
        &["weftd", "weft", "weft-cni"]
    };
    let mut plan: Vec<(PathBuf, Vec<u8>, u32)> = Vec::new();
    for bin in bins {
        let src = from.join(bin);
        let bytes = fs::read(&src).with_context(|| {
            format!(
                "reading {}; build with `cargo build --release` or pass --from",
                src.display()
            )
        })?;
        if *bin == "weft-cni" {
            plan.push((
                under(&a.root, &a.cni_bin_dir).join(bin),
                bytes.clone(),
                0o755,
            ));
        }
        if !a.cni_only {
            plan.push((under(&a.root, &a.bin_dir).join(bin), bytes, 0o755));
        }
    }
    if a.cni_only {
        // the kubelet takes the first conflist in the directory as the
        // node's network: it goes last, once the plugins it names are there
        plan.extend(missing_reference_plugins(&a)?);
    }
    plan.push((
        under(&a.root, &a.cni_conf_dir).join("10-weft.conflist"),
        conflist_bytes,
        0o644,
    ));
    if !a.cni_only {
        plan.push((
            under(&a.root, &a.systemd_dir).join("weftd.service"),
            unit(socket).into_bytes(),
            0o644,
        ));
    }

    let mut refused = Vec::new();
    for (dst, bytes, mode) in &plan {
        let current = fs::read(dst).ok();
        let (verb, write) = match &current {
            Some(c) if c == bytes => ("unchanged", false),
            Some(_)
                if !a.force
                    && !dst.starts_with(under(&a.root, &a.bin_dir))
                    && !dst.starts_with(under(&a.root, &a.cni_bin_dir)) =>
            {
                refused.push(dst.clone());
                ("kept (differs; --force replaces it)", false)
            }
            Some(_) => ("updated", true),
            None => ("installed", true),
        };
        outln!("{verb:<12} {}", dst.display());
        if write && !a.dry_run {
            write_atomically(dst, bytes, *mode)?;
        }
    }
    // runtimes that look only in the CNI bin dir (containerd) need the
    // chained plugins there; Debian ships them elsewhere
    for plugin in chained_plugins() {
        if a.cni_only {
            break; // copied above: a link into a container's files means nothing on the host
        }
        let shipped = Path::new(REFERENCE_PLUGINS).join(&plugin);
        let dst = under(&a.root, &a.cni_bin_dir).join(&plugin);
        if shipped.exists() && dst.symlink_metadata().is_err() {
            outln!(
                "{:<12} {} -> {}",
                "linked",
                dst.display(),
                shipped.display()
            );
            if !a.dry_run {
                fs::create_dir_all(dst.parent().context("no parent")?)?;
                std::os::unix::fs::symlink(&shipped, &dst)
                    .with_context(|| format!("linking {}", dst.display()))?;
            }
        }
    }
    if a.dry_run {
        outln!("(dry run: nothing written)");
    } else if a.root == Path::new("/") && !a.cni_only {
        outln!("next: systemctl daemon-reload && systemctl enable --now weftd; then run pods with the runtime (the conflist's network is \"weft\")");
    }
    if !refused.is_empty() && !a.force {
        bail!(
            "{} existing file(s) differ from weft's and were kept; review them or pass --force",
            refused.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A conflist given with --conflist: JSON with a `plugins` list, or refused
/// (a broken conflist takes the node's pod networking down).
fn read_conflist(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = fs::read(path).with_context(|| format!("reading conflist {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not JSON; fix the conflist", path.display()))?;
    if !v["plugins"].is_array() || v["name"].as_str().is_none() {
        bail!(
            "{} has no \"name\" or no \"plugins\" list; it is not a CNI conflist",
            path.display()
        );
    }
    Ok(bytes)
}

/// The chained plugins (portmap, bandwidth) the CNI bin dir lacks, copied
/// from the reference plugins beside this weft (`/usr/lib/cni`); a cluster
/// that ships its own (kubeadm's kubernetes-cni) keeps them.
fn missing_reference_plugins(a: &InstallArgs) -> anyhow::Result<Vec<(PathBuf, Vec<u8>, u32)>> {
    let mut out = Vec::new();
    for plugin in chained_plugins() {
        let dst = under(&a.root, &a.cni_bin_dir).join(&plugin);
        let shipped = Path::new(REFERENCE_PLUGINS).join(&plugin);
        if dst.exists() {
            continue;
        }
        if !shipped.exists() {
            outln!(
                "{:<12} {} (missing; the conflist chains it: install the reference CNI plugins)",
                "warning",
                dst.display()
            );
            continue;
        }
        let bytes = fs::read(&shipped).with_context(|| format!("reading {}", shipped.display()))?;
        out.push((dst, bytes, 0o755));
    }
    Ok(out)
}

/// Writes through a temporary file and a rename, so a runtime never execs or
/// reads a half-written plugin or config.
fn write_atomically(dst: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = dst.parent().context("destination has no directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.weft-install",
        dst.file_name().unwrap_or_default().to_string_lossy()
    ));
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, dst).with_context(|| format!("moving into place {}", dst.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_reaches_the_conflist_and_the_unit() {
        let s = Path::new("/run/other/weftd.sock");
        let list: serde_json::Value = serde_json::from_str(&conflist(s).unwrap()).unwrap();
        assert_eq!(list["plugins"][0]["agentSocket"], "/run/other/weftd.sock");
        assert!(unit(s).contains("weftd --socket /run/other/weftd.sock --pool"));
        let d = Path::new(weft_api::DEFAULT_SOCKET);
        assert_eq!(unit(d), UNIT);
        let list: serde_json::Value = serde_json::from_str(&conflist(d).unwrap()).unwrap();
        assert_eq!(list["plugins"][0]["agentSocket"], weft_api::DEFAULT_SOCKET);
    }

    #[test]
    fn only_chained_plugins_are_linked() {
        // bandwidth is not chained: Debian's 1.1.1 panics on CHECK when a pod
        // asks for no shaping (README, "Running it on a host")
        assert_eq!(chained_plugins(), vec!["portmap".to_string()]);
    }
}
