//! `weft install` into a private root: what lands where, idempotency, and
//! that an operator's edited config is never silently replaced.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory of this test, removed when dropped: pass or fail, nothing is
/// left in /tmp.
struct Tmp(PathBuf);

impl std::ops::Deref for Tmp {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Tmp {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmp(tag: &str) -> Tmp {
    let d = std::env::temp_dir().join(format!("weft-install-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Tmp(d)
}

fn install(root: &Path, from: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("install")
        .arg("--root")
        .arg(root)
        .arg("--from")
        .arg(from)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn install_lays_out_a_host_and_is_idempotent() {
    let from = tmp("from");
    for bin in ["weftd", "weft", "weft-cni"] {
        std::fs::write(from.join(bin), format!("#!/bin/sh\necho {bin}\n")).unwrap();
    }
    let root = tmp("root");
    let out = install(&root, &from, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (path, mode) in [
        ("usr/local/bin/weftd", 0o755),
        ("usr/local/bin/weft", 0o755),
        ("usr/local/bin/weft-cni", 0o755),
        ("opt/cni/bin/weft-cni", 0o755),
        ("etc/cni/net.d/10-weft.conflist", 0o644),
        ("etc/systemd/system/weftd.service", 0o644),
    ] {
        let meta = std::fs::metadata(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{path}");
    }
    let conflist: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("etc/cni/net.d/10-weft.conflist")).unwrap(),
    )
    .unwrap();
    assert_eq!(conflist["plugins"][0]["type"], "weft-cni");

    // the chained reference plugins are linked where containerd looks
    if Path::new("/usr/lib/cni/portmap").exists() {
        let link = std::fs::read_link(root.join("opt/cni/bin/portmap")).unwrap();
        assert_eq!(link, Path::new("/usr/lib/cni/portmap"));
    }

    // again: nothing changes
    let again = install(&root, &from, &[]);
    assert!(again.status.success());
    let text = String::from_utf8_lossy(&again.stdout);
    assert!(
        text.lines().filter(|l| l.starts_with("unchanged")).count() == 6,
        "{text}"
    );

    // an operator edited the conflist: kept, and the run says so and fails
    std::fs::write(
        root.join("etc/cni/net.d/10-weft.conflist"),
        b"{\"edited\": true}",
    )
    .unwrap();
    let kept = install(&root, &from, &[]);
    assert!(!kept.status.success());
    assert!(String::from_utf8_lossy(&kept.stderr).contains("--force"));
    assert_eq!(
        std::fs::read(root.join("etc/cni/net.d/10-weft.conflist")).unwrap(),
        b"{\"edited\": true}"
    );
    let forced = install(&root, &from, &["--force"]);
    assert!(forced.status.success());
    assert_ne!(
        std::fs::read(root.join("etc/cni/net.d/10-weft.conflist")).unwrap(),
        b"{\"edited\": true}"
    );

    // a dry run writes nothing
    let empty = tmp("dry");
    let dry = install(&empty, &from, &["--dry-run"]);
    assert!(dry.status.success());
    assert!(!empty.join("usr").exists());

    for d in [from, root, empty] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn install_says_what_to_do_when_binaries_are_missing() {
    let from = tmp("missing");
    let root = tmp("missing-root");
    let out = install(&root, &from, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cargo build --release") && err.contains("--from"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(from);
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn install_socket_reaches_the_conflist_and_the_unit() {
    let from = tmp("sock-from");
    for bin in ["weftd", "weft", "weft-cni"] {
        std::fs::write(from.join(bin), format!("#!/bin/sh\necho {bin}\n")).unwrap();
    }
    let root = tmp("sock-root");
    let out = install(&root, &from, &["--socket", "/run/weft-other/weftd.sock"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conflist: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("etc/cni/net.d/10-weft.conflist")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        conflist["plugins"][0]["agentSocket"],
        "/run/weft-other/weftd.sock"
    );
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/weftd.service")).unwrap();
    assert!(
        unit.contains("weftd --socket /run/weft-other/weftd.sock "),
        "{unit}"
    );
    let relative = install(&root, &from, &["--socket", "weftd.sock"]);
    assert!(!relative.status.success());
}

#[test]
fn cni_only_install_is_what_the_daemonset_init_container_does() {
    let from = tmp("cni-from");
    // the image holds only what it needs: weft-cni is enough
    std::fs::write(from.join("weft-cni"), b"#!/bin/sh\necho weft-cni\n").unwrap();
    let root = tmp("cni-root");
    let conflist = from.join("custom.conflist");
    std::fs::write(
        &conflist,
        br#"{"cniVersion": "1.0.0", "name": "weft", "plugins": [{"type": "weft-cni", "ipFamilies": ["ipv4"]}]}"#,
    )
    .unwrap();
    let conf_arg = conflist.to_str().unwrap();
    let out = install(
        &root,
        &from,
        &["--cni-only", "--force", "--conflist", conf_arg],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(root.join("opt/cni/bin/weft-cni").exists());
    assert_eq!(
        std::fs::read(root.join("etc/cni/net.d/10-weft.conflist")).unwrap(),
        std::fs::read(&conflist).unwrap()
    );
    for host_only in ["usr/local/bin/weftd", "etc/systemd/system/weftd.service"] {
        assert!(
            !root.join(host_only).exists(),
            "{host_only} is not the init container's job"
        );
    }
    // chained plugins the host lacks are copied, never linked into the image
    if Path::new("/usr/lib/cni/portmap").exists() {
        let meta = std::fs::symlink_metadata(root.join("opt/cni/bin/portmap")).unwrap();
        assert!(meta.file_type().is_file());
    }
    // the conflist is written last: the kubelet takes its appearance as
    // "the network is ready", so everything it names must already be there
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .last()
            .unwrap_or("")
            .contains("10-weft.conflist"),
        "{text}"
    );

    // a file that is not a conflist is refused and nothing is replaced
    std::fs::write(&conflist, b"{\"not\": \"a conflist\"}").unwrap();
    let bad = install(
        &root,
        &from,
        &["--cni-only", "--force", "--conflist", conf_arg],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a CNI conflist"));
    assert!(
        std::fs::read_to_string(root.join("etc/cni/net.d/10-weft.conflist"))
            .unwrap()
            .contains("weft-cni")
    );
}
