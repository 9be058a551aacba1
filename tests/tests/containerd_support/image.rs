//! The test's container image: an OCI image layout tar of a busybox-static
//! rootfs, built from the host's busybox (no registry, no pull).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use super::{output_within, IMAGE};

pub(super) fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let out = output_within(Command::new("sha256sum").arg(path), Duration::from_secs(10))?;
    if !out.status.success() {
        bail!("sha256sum {}: {:?}", path.display(), out);
    }
    let s = String::from_utf8(out.stdout)?;
    let hex = s.split_whitespace().next().context("sha256sum output")?;
    Ok(hex.to_string())
}

/// Moves `file` into `blobs/sha256/<digest>`; returns (digest, size).
fn into_blob(layout: &Path, file: &Path) -> anyhow::Result<(String, u64)> {
    let hex = sha256_file(file)?;
    let size = fs::metadata(file)?.len();
    fs::rename(file, layout.join("blobs/sha256").join(&hex))?;
    Ok((format!("sha256:{hex}"), size))
}

/// Builds an OCI image layout tar of a busybox-static rootfs (one plain tar
/// layer: /bin/busybox, applet links, /www/index.html holding `page`).
/// Returns the tar's path.
pub fn build_busybox_image(dir: &Path, page: &str) -> anyhow::Result<PathBuf> {
    let work = dir.join("image");
    let rootfs = work.join("rootfs");
    let layout = work.join("oci");
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "www"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    fs::create_dir_all(layout.join("blobs/sha256"))?;
    let bb = busybox().context("busybox-static not installed")?;
    fs::copy(&bb, rootfs.join("bin/busybox"))?;
    fs::set_permissions(
        rootfs.join("bin/busybox"),
        fs::Permissions::from_mode(0o755),
    )?;
    for applet in [
        "sh", "ip", "httpd", "nc", "wget", "sleep", "cat", "ls", "echo", "printf", "tail",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    fs::write(rootfs.join("www/index.html"), page)?;
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;

    let layer = work.join("layer.tar");
    let out = output_within(
        Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["--owner=0", "--group=0", "--numeric-owner", "-cf"])
            .arg(&layer)
            .arg("."),
        Duration::from_secs(20),
    )?;
    if !out.status.success() {
        bail!(
            "tar of the rootfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // a plain (uncompressed) layer: its digest is also its diff_id
    let (layer_digest, layer_size) = into_blob(&layout, &layer)?;
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let config_file = work.join("config.json");
    fs::write(&config_file, serde_json::to_vec(&config)?)?;
    let (config_digest, config_size) = into_blob(&layout, &config_file)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer_size,
        }],
    });
    let manifest_file = work.join("manifest.json");
    fs::write(&manifest_file, serde_json::to_vec(&manifest)?)?;
    let (manifest_digest, manifest_size) = into_blob(&layout, &manifest_file)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": IMAGE,
                "org.opencontainers.image.ref.name": "test",
            },
        }],
    });
    fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let tar = work.join("image.tar");
    let out = output_within(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .args(["--owner=0", "--group=0", "--numeric-owner", "-cf"])
            .arg(&tar)
            .arg("."),
        Duration::from_secs(20),
    )?;
    if !out.status.success() {
        bail!(
            "tar of the layout: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(tar)
}
