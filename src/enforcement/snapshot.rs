//! The local snapshot of the last enforcement settings this instance applied.
//!
//! An instance that starts while its store is unreachable does not know the settings; without
//! a snapshot it answers every check as ENFORCED with the store unavailable
//! (`settings_unavailable`). With one, the snapshot's settings apply, marked stale until the
//! store confirms them, and its version counts as seen: an instance never applies a lower one
//! afterwards, and restores a store record that vanished or went back below it.
//!
//! The file is JSON, replaced atomically (temporary file, `fsync`, `rename`, `fsync` of the
//! directory) on every change the instance applies, so a crash leaves the old or the new one,
//! never a torn one. It names the store it was taken against (the Redis address without
//! credentials, and the settings key); a snapshot of another store, or one that cannot be read
//! or parsed, is ignored with a warning: it can never make an instance answer more permissively
//! than it would without one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::EnforcementSettings;
use crate::timestamp::Timestamp;

/// The `format` of the files this version writes and reads.
const FORMAT: &str = "gatehouse-settings-snapshot/1";

/// A snapshot file and the store it belongs to.
#[derive(Debug)]
pub struct Snapshot {
    path: PathBuf,
    store: String,
    /// The version last written (or read): older settings are never written over newer.
    written: Mutex<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotFile {
    format: String,
    store: String,
    saved_at: Timestamp,
    settings: EnforcementSettings,
}

impl Snapshot {
    /// The snapshot at `path` of the settings kept in `store` (see [`store_identity`]).
    pub fn new(path: impl Into<PathBuf>, store: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            store: store.into(),
            written: Mutex::new(0),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The settings in the file, or `None` when there is none or it is unusable (warned).
    pub fn load(&self) -> Option<EnforcementSettings> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "settings snapshot unreadable; ignored");
                return None;
            }
        };
        let file: SnapshotFile = match serde_json::from_str(&text) {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "settings snapshot corrupt; ignored");
                return None;
            }
        };
        let settings = file.settings;
        let problem = if file.format != FORMAT {
            Some(format!("unknown format {:?}", file.format))
        } else if file.store != self.store {
            Some(format!("taken against another store ({})", file.store))
        } else if settings.version == 0 {
            Some("version 0 is never saved".to_owned())
        } else if settings.enforce_percent.is_some_and(|p| p > 100) {
            Some("enforce_percent above 100".to_owned())
        } else {
            None
        };
        if let Some(problem) = problem {
            tracing::warn!(path = %self.path.display(), problem, "settings snapshot ignored");
            return None;
        }
        *self.lock() = settings.version;
        Some(settings)
    }

    /// Replaces the file with `settings`, atomically, unless it already holds a version at or
    /// above theirs. Blocking: call it off the async threads.
    pub fn save(&self, settings: &EnforcementSettings) -> std::io::Result<()> {
        let mut written = self.lock();
        if settings.version <= *written {
            return Ok(());
        }
        let file = SnapshotFile {
            format: FORMAT.to_owned(),
            store: self.store.clone(),
            saved_at: Timestamp::now(),
            settings: settings.clone(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = self
            .path
            .file_name()
            .map_or_else(|| "settings".into(), |n| n.to_string_lossy().into_owned());
        // Unique per writer: several instances may share a process (tests, embedding).
        let temp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
        let result = (|| {
            let mut out = std::fs::File::create(&temp)?;
            out.write_all(&json)?;
            out.write_all(b"\n")?;
            out.sync_all()?;
            std::fs::rename(&temp, &self.path)?;
            // The rename is durable once the directory is.
            std::fs::File::open(&dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        } else {
            *written = settings.version;
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        // A panic while holding it leaves a plain number behind: still usable.
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How a snapshot names its store: the Redis URL without credentials, and the settings key.
pub fn store_identity(redis_url: &str, settings_key: &str) -> String {
    let without_credentials = match redis_url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let rest = match rest[..authority_end].rfind('@') {
                Some(at) => &rest[at + 1..],
                None => rest,
            };
            format!("{scheme}://{rest}")
        }
        None => redis_url.to_owned(),
    };
    format!("{without_credentials} {settings_key}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Mode;

    fn settings(version: u64, mode: Mode) -> EnforcementSettings {
        EnforcementSettings {
            version,
            ..EnforcementSettings::initial(mode)
        }
    }

    #[test]
    fn round_trips_and_never_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        let snapshot = Snapshot::new(&path, "redis://h:1 k");
        assert_eq!(snapshot.load(), None);
        snapshot.save(&settings(3, Mode::Enforced)).unwrap();
        snapshot.save(&settings(2, Mode::Disabled)).unwrap();
        let again = Snapshot::new(&path, "redis://h:1 k");
        assert_eq!(again.load(), Some(settings(3, Mode::Enforced)));
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn corrupt_or_foreign_snapshots_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        Snapshot::new(&path, "redis://h:1 k")
            .save(&settings(3, Mode::Enforced))
            .unwrap();
        assert_eq!(Snapshot::new(&path, "redis://other:1 k").load(), None);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        assert_eq!(Snapshot::new(&path, "redis://h:1 k").load(), None);
        std::fs::write(&path, text.replace("\"version\": 3", "\"version\": 0")).unwrap();
        assert_eq!(Snapshot::new(&path, "redis://h:1 k").load(), None);
    }

    #[test]
    fn the_store_identity_has_no_credentials() {
        assert_eq!(
            store_identity("redis://:secret@cache:6379/2", "gatehouse:{enforcement}"),
            "redis://cache:6379/2 gatehouse:{enforcement}"
        );
        assert_eq!(
            store_identity("redis://user:p@ss@h:1", "k"),
            "redis://h:1 k"
        );
        assert_eq!(
            store_identity("unix:///run/redis.sock", "k"),
            "unix:///run/redis.sock k"
        );
    }
}
