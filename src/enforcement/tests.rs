//! The settings state machine against a store that can lose its data or stop answering.

use std::sync::Mutex;

use async_trait::async_trait;
use futures_util::stream;

use super::*;
use crate::store::SettingsFeed;
use crate::store::{SaveOutcome, StoreError};

/// A settings store that can lose its data or stop answering.
#[derive(Default)]
struct Flaky {
    record: Mutex<Option<EnforcementSettings>>,
    history: Mutex<Vec<HistoryEntry>>,
    down: AtomicBool,
}

impl Flaky {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::Acquire) {
            Err(StoreError::Unavailable("down".into()))
        } else {
            Ok(())
        }
    }

    fn forget(&self) {
        *self.record.lock().unwrap() = None;
        self.history.lock().unwrap().clear();
    }

    fn version(&self) -> u64 {
        self.record
            .lock()
            .unwrap()
            .as_ref()
            .map_or(0, |s| s.version)
    }
}

#[async_trait]
impl SettingsStore for Flaky {
    async fn load_settings(&self) -> Result<Option<EnforcementSettings>, StoreError> {
        self.check()?;
        Ok(self.record.lock().unwrap().clone())
    }

    async fn save_settings(
        &self,
        expected: u64,
        next: &EnforcementSettings,
        entry: &HistoryEntry,
    ) -> Result<SaveOutcome, StoreError> {
        self.check()?;
        let mut record = self.record.lock().unwrap();
        let current = record.as_ref().map_or(0, |s| s.version);
        if current != expected || next.version <= expected {
            return Ok(SaveOutcome::VersionConflict { current });
        }
        *record = Some(next.clone());
        self.history.lock().unwrap().push(entry.clone());
        Ok(SaveOutcome::Saved)
    }

    async fn history(
        &self,
        _before: Option<u64>,
        _limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.check()?;
        Ok(self.history.lock().unwrap().iter().rev().cloned().collect())
    }

    async fn watch(&self) -> Result<SettingsFeed, StoreError> {
        self.check()?;
        Ok(stream::pending().boxed())
    }
}

fn global(mode: Mode) -> Change {
    Change::Global {
        mode,
        enforce_percent: None,
    }
}

#[tokio::test]
async fn nothing_is_known_until_read_and_a_fresh_store_is_initialised_once() {
    let store = Arc::new(Flaky::default());
    store.down.store(true, Ordering::Release);
    let a = Enforcement::new(store.clone(), Mode::LogOnly).with_instance("a");
    let b = Enforcement::new(store.clone(), Mode::Enforced).with_instance("b");
    assert!(a.reload().await.is_err());
    assert!(a.in_force().is_none());
    assert_eq!(
        a.current().mode,
        Mode::Enforced,
        "the placeholder is strict"
    );
    assert_eq!(a.status().source, SettingsSource::None);
    store.down.store(false, Ordering::Release);
    let (ra, rb) = tokio::join!(a.reload(), b.reload());
    ra.unwrap();
    rb.unwrap();
    // One of them initialised the record; both apply the same one.
    let history = store.history(None, 10).await.unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0].change, HistoryChange::Initialise);
    assert_eq!(a.current(), b.current());
    assert_eq!(a.current().version, 1);
    assert_eq!(a.status().record, RecordState::Ok);
}

#[tokio::test]
async fn a_record_that_vanished_is_restored_above_the_version_seen_by_one_instance() {
    let store = Arc::new(Flaky::default());
    let a = Enforcement::new(store.clone(), Mode::LogOnly).with_instance("a");
    let b = Enforcement::new(store.clone(), Mode::LogOnly).with_instance("b");
    a.reload().await.unwrap();
    a.change("root", global(Mode::Enforced), "go", None)
        .await
        .unwrap();
    b.reload().await.unwrap();
    assert_eq!(b.current().version, 2);

    store.forget();
    let (ra, rb) = tokio::join!(a.reload(), b.reload());
    ra.unwrap();
    rb.unwrap();
    for e in [&a, &b] {
        assert_eq!(e.current().mode, Mode::Enforced);
        assert_eq!(e.current().version, 3);
    }
    let history = store.history(None, 10).await.unwrap();
    assert_eq!(history.len(), 1, "exactly one restorer wins: {history:#?}");
    assert_eq!(history[0].change, HistoryChange::Restore);
    assert!(history[0].actor == "instance:a" || history[0].actor == "instance:b");
    assert!(
        history[0].reason.contains("vanished"),
        "{}",
        history[0].reason
    );
    assert_eq!(store.version(), 3);
    // The initialisation and the restore.
    assert_eq!(a.status().restores + b.status().restores, 2);
}

#[tokio::test]
async fn a_record_that_went_back_is_never_applied_and_changes_go_above_the_version_seen() {
    let store = Arc::new(Flaky::default());
    let a = Enforcement::new(store.clone(), Mode::LogOnly).with_instance("a");
    a.reload().await.unwrap();
    let stale = store.record.lock().unwrap().clone().unwrap();
    for mode in [Mode::Enforced, Mode::Disabled, Mode::Enforced] {
        a.change("root", global(mode), "step", None).await.unwrap();
    }
    assert_eq!(a.current().version, 4);
    // A failover to a replica that only had version 1 (LOG_ONLY).
    *store.record.lock().unwrap() = Some(stale);
    let (settings, entry) = a
        .change(
            "root",
            Change::Endpoint {
                name: "chat".into(),
                mode: Some(Mode::LogOnly),
            },
            "pilot",
            None,
        )
        .await
        .unwrap();
    // Restored as 5 (ENFORCED), then the change on top of it as 6.
    assert_eq!(settings.version, 6);
    assert_eq!(settings.mode, Mode::Enforced);
    assert_eq!(entry.unwrap().version, 6);
    let history = store.history(None, 10).await.unwrap();
    assert_eq!(history[1].change, HistoryChange::Restore);
    assert!(history[1].reason.contains("went back to version 1"));
    assert_eq!(a.current().version, 6);
}

#[tokio::test]
async fn other_settings_at_the_version_in_force_are_restored_over() {
    let store = Arc::new(Flaky::default());
    let a = Enforcement::new(store.clone(), Mode::LogOnly).with_instance("a");
    a.reload().await.unwrap();
    a.change("root", global(Mode::Enforced), "go", None)
        .await
        .unwrap();
    // Another lineage reached version 2 with weaker settings (a store that lost data).
    let mut other = store.record.lock().unwrap().clone().unwrap();
    other.mode = Mode::Disabled;
    *store.record.lock().unwrap() = Some(other);
    a.reload().await.unwrap();
    assert_eq!(a.current().mode, Mode::Enforced);
    assert_eq!(store.version(), 3);
    let restore = store.history(None, 1).await.unwrap().remove(0);
    assert_eq!(restore.change, HistoryChange::Restore);
    assert_eq!(restore.from["mode"], "DISABLED");
    assert_eq!(restore.to["mode"], "ENFORCED");
}

#[tokio::test]
async fn a_snapshot_applies_until_confirmed_and_is_restored_over_a_lost_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("settings.json");
    let store = Arc::new(Flaky::default());
    let a = Enforcement::new(store.clone(), Mode::LogOnly).with_snapshot(Snapshot::new(&path, "s"));
    a.reload().await.unwrap();
    a.change("root", global(Mode::Enforced), "go", None)
        .await
        .unwrap();
    let written = || {
        std::fs::read_to_string(&path)
            .ok()
            .is_some_and(|t| t.contains("\"version\": 2"))
    };
    for _ in 0..500 {
        if written() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(written(), "snapshot written");

    // A new instance, the store down and then empty: the snapshot's settings apply,
    // stale, and are written back once the store answers.
    store.forget();
    store.down.store(true, Ordering::Release);
    let b = Enforcement::new(store.clone(), Mode::LogOnly)
        .with_instance("b")
        .with_snapshot(Snapshot::new(&path, "s"));
    assert!(b.reload().await.is_err());
    let status = b.status();
    assert_eq!(status.source, SettingsSource::Snapshot);
    assert!(status.stale && !status.loaded);
    assert_eq!(b.current().mode, Mode::Enforced);
    store.down.store(false, Ordering::Release);
    b.reload().await.unwrap();
    assert_eq!(b.status().source, SettingsSource::Store);
    assert_eq!(b.current().version, 3);
    assert_eq!(store.history(None, 1).await.unwrap()[0].actor, "instance:b");

    // A snapshot of another store is not trusted.
    let c = Enforcement::new(store.clone(), Mode::LogOnly)
        .with_snapshot(Snapshot::new(&path, "elsewhere"));
    assert!(c.in_force().is_none());
}
