//! The DEL spool: where weft-cni records a DEL it could not deliver because
//! weftd was not reachable, so the runtime's DEL still succeeds (the spec
//! wants DEL to be best-effort and idempotent) and nothing leaks.
//!
//! Format, for weftd's replay at start:
//!
//! * directory: the config's `spoolDir`, else
//!   [`weft_api::DEFAULT_SPOOL_DIR`] (`/var/lib/weft/spool`); created with
//!   mode 0700 when missing;
//! * one file per attachment, named `<containerid>-<ifname>.json` (see
//!   [`spool_file_name`]), mode 0600; a repeated DEL overwrites it with the
//!   same content;
//! * content: exactly `serde_json` of [`weft_api::DelRequest`];
//! * written atomically: a temporary `.<name>.<pid>.tmp` (leading dot, not
//!   ending in `.json`, so a reader taking `*.json` never sees it), fsync,
//!   rename, fsync of the directory.
//!
//! weftd reads every `*.json` in the directory, performs the DEL, and
//! removes the file. Container ids and ifnames are validated before this
//! point (no '/', not "." or ".."), so the name cannot escape the directory.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use weft_api::{Attachment, DelRequest};

/// `<containerid>-<ifname>.json`. Container ids from CRI runtimes are hex
/// and contain no '-', so names do not collide in practice; weftd relies on
/// the content, never on parsing the name.
pub fn spool_file_name(a: &Attachment) -> String {
    format!("{}-{}.json", a.container_id, a.ifname)
}

/// Writes `req` into `dir` and returns the file's path.
pub fn write(dir: &Path, req: &DelRequest) -> io::Result<PathBuf> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let name = spool_file_name(&req.attachment);
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let body = serde_json::to_vec(req).map_err(io::Error::other)?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn req() -> DelRequest {
        DelRequest {
            attachment: Attachment {
                container_id: "abc123".into(),
                ifname: "eth0".into(),
            },
            netns: String::new(),
            network: "weft".into(),
        }
    }

    #[test]
    fn name() {
        assert_eq!(spool_file_name(&req().attachment), "abc123-eth0.json");
    }

    #[test]
    fn writes_atomically_with_modes() {
        let base = std::env::temp_dir().join(format!("weft-spool-unit-{}", std::process::id()));
        let dir = base.join("a/b");
        let path = write(&dir, &req()).unwrap();
        assert_eq!(path, dir.join("abc123-eth0.json"));
        let back: DelRequest = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back, req());
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Again: overwritten, no temporaries left.
        write(&dir, &req()).unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
