//! The rule id table saved in the state directory, so a restarted weftd
//! gives every rule the id the pinned maps and per-rule counters already
//! carry (flow attributions and counters stay stable across restarts).

use std::path::{Path, PathBuf};

use weft_policy::{RuleIds, SavedRuleIds};

/// The file under `--state-dir`.
pub const FILE: &str = "policy-rule-ids.json";

/// The table a previous weftd saved at `path`; a fresh one when there is
/// none, or (with a warning) when it cannot be read.
pub fn load(path: &Path) -> RuleIds {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return RuleIds::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "rule ids not read; numbering rules afresh (per-rule counters restart)");
            return RuleIds::new();
        }
    };
    match serde_json::from_slice::<SavedRuleIds>(&text) {
        Ok(saved) => RuleIds::restore(saved),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "rule ids file unreadable; numbering rules afresh (per-rule counters restart)");
            RuleIds::new()
        }
    }
}

/// Saves the table when it changed since the last save.
pub struct Saver {
    path: Option<PathBuf>,
    saved: Option<(u32, usize)>,
}

impl Saver {
    pub fn new(path: Option<PathBuf>) -> Self {
        Saver { path, saved: None }
    }

    /// Writes `ids` (atomically: a temporary file renamed over the old)
    /// unless nothing changed; a failure is logged and retried next time.
    pub fn save(&mut self, ids: &RuleIds) {
        let Some(path) = &self.path else { return };
        if self.saved == Some(ids.version()) {
            return;
        }
        let tmp = path.with_extension("json.tmp");
        let res = serde_json::to_vec(&ids.save())
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        match res {
            Ok(()) => self.saved = Some(ids.version()),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(path = %path.display(), error = %e, "rule ids not saved; a restart would renumber rules");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_policy::{AllowedBy, Direction, PolicyRef, RuleRef};

    fn rule(index: usize) -> AllowedBy {
        AllowedBy::Rule(RuleRef {
            policy: PolicyRef {
                namespace: "x".into(),
                name: "p".into(),
            },
            direction: Direction::Ingress,
            index,
        })
    }

    /// A directory of this test's own, removed also when it fails.
    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn ids_survive_a_restart_through_the_file() {
        let dir =
            TempDir(std::env::temp_dir().join(format!("weft-rule-ids-{}", std::process::id())));
        std::fs::create_dir_all(&dir.0).unwrap();
        let path = dir.0.join(FILE);
        assert_eq!(load(&path).save(), RuleIds::new().save(), "no file: fresh");
        let mut ids = RuleIds::new();
        let r1 = ids.id(&rule(1));
        let r0 = ids.id(&rule(0));
        let mut saver = Saver::new(Some(path.clone()));
        saver.save(&ids);
        // the next weftd meets the rules in another order: same ids
        let mut again = load(&path);
        assert_eq!(again.id(&rule(0)), r0);
        assert_eq!(again.id(&rule(1)), r1);
        // unchanged: not rewritten; changed: rewritten
        std::fs::remove_file(&path).unwrap();
        saver.save(&ids);
        assert!(!path.exists());
        let r2 = ids.id(&rule(2));
        saver.save(&ids);
        assert_eq!(load(&path).reason(r2), Some(&rule(2)));
        // a damaged file: fresh numbering, no panic
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(load(&path).save(), RuleIds::new().save());
    }
}
