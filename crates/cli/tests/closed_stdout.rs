//! `weft ... | head -1`: when the reader of weft's stdout goes away, weft
//! stops printing and exits quietly: no "failed printing to stdout: Broken
//! pipe" panic (Rust ignores SIGPIPE, so a write to a closed pipe is an
//! EPIPE error, which `println!` turns into a panic).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

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
    let d = std::env::temp_dir().join(format!("weft-epipe-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Tmp(d)
}

/// `weft install --dry-run` into an empty root: a line per file, written
/// one `println!` at a time, and it needs neither root nor a weftd.
fn install_dry_run(from: &Path, root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weft"));
    c.arg("install")
        .arg("--dry-run")
        .arg("--root")
        .arg(root)
        .arg("--from")
        .arg(from);
    c
}

fn fake_binaries(tag: &str) -> Tmp {
    let from = tmp(tag);
    for bin in ["weftd", "weft", "weft-cni"] {
        std::fs::write(from.join(bin), format!("#!/bin/sh\necho {bin}\n")).unwrap();
    }
    from
}

fn weft(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weft"));
    c.args(args);
    c
}

fn assert_quiet(what: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{what}: {stderr}"
    );
    assert!(
        out.status.code().is_some(),
        "{what}: killed: {:?}",
        out.status
    );
}

/// Spawns `cmd` with stdout a pipe (stderr captured); the Command, and its
/// copy of the pipe's writing end, is gone when this returns.
fn spawn_into_pipe(mut cmd: Command) -> (Child, std::io::PipeReader) {
    let (reader, writer) = std::io::pipe().unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, reader)
}

/// The reader is gone before weft writes anything: its very first write
/// fails with EPIPE, every time.
#[test]
fn printing_into_a_closed_pipe_does_not_panic() {
    let from = fake_binaries("from-closed");
    let root = tmp("root-closed");
    let cases: Vec<(&str, Command)> = vec![
        ("install --dry-run", install_dry_run(&from, &root)),
        ("lab status", weft(&["lab", "status"])),
        ("lab status -o json", weft(&["lab", "status", "-o", "json"])),
        ("--help", weft(&["--help"])),
    ];
    for (what, cmd) in cases {
        let (child, reader) = spawn_into_pipe(cmd);
        drop(reader);
        let out = child.wait_with_output().unwrap();
        assert_quiet(what, &out);
        assert!(out.status.success(), "{what}: {:?}", out.status);
    }
    // the dry run still wrote nothing
    assert!(!root.join("usr").exists());
    for d in [from, root] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Like `weft install --dry-run | head -1`: the first line arrives, then the
/// reader goes away while weft may still be printing.
#[test]
fn the_reader_leaving_after_the_first_line_is_not_a_panic() {
    let from = fake_binaries("from-head");
    let root = tmp("root-head");
    for _ in 0..20 {
        let (child, reader) = spawn_into_pipe(install_dry_run(&from, &root));
        let mut first = String::new();
        BufReader::new(reader).read_line(&mut first).unwrap();
        assert!(first.starts_with("installed"), "{first}");
        let out = child.wait_with_output().unwrap();
        assert_quiet("install --dry-run | head -1", &out);
        assert!(out.status.success(), "{:?}", out.status);
    }
    for d in [from, root] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Any other write error is still reported, as an error, not a panic.
#[test]
fn a_full_disk_behind_stdout_is_an_error() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        return; // no /dev/full here
    };
    let from = fake_binaries("from-full");
    let root = tmp("root-full");
    let out = install_dry_run(&from, &root)
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("writing to stdout"), "{stderr}");
    assert!(!out.status.success());
    for d in [from, root] {
        let _ = std::fs::remove_dir_all(d);
    }
}
