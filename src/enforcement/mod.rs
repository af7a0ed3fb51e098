//! Enforcement settings: the mode in force, how it changes, and its history.
//!
//! Every instance keeps the current [`EnforcementSettings`] in memory ([`Enforcement::current`]
//! is a lock-free read on the hot path) and re-reads them from the store periodically
//! ([`Enforcement::spawn_refresh`]); a change is a compare-and-set on the settings version, so
//! two admins racing cannot lose an update. While the store is unreachable, the last known
//! settings stay in force.

mod routes;
mod settings;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::decision::Mode;
use crate::store::{SaveOutcome, SettingsStore, StoreError};
use crate::timestamp::Timestamp;

pub use self::routes::routes;
pub use self::settings::{EnforcementSettings, HistoryEntry};

/// Longest accepted change reason, in characters.
pub const MAX_REASON_LEN: usize = 1000;

/// Attempts of a change without `expected_version` before giving up on a busy record.
const SAVE_ATTEMPTS: usize = 10;

/// Why a settings change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The reason is empty or too long.
    #[error("a reason (1-{MAX_REASON_LEN} characters) is required for every change")]
    InvalidReason,
    /// `expected_version` is not the stored version.
    #[error("settings are at version {current}, not {expected}; re-read and retry")]
    VersionConflict {
        /// The version the caller expected.
        expected: u64,
        /// The stored version.
        current: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A change of the global settings.
#[derive(Debug, Clone)]
pub struct GlobalChange {
    /// The new global mode.
    pub mode: Mode,
    /// Why (required).
    pub reason: String,
    /// Refuse the change unless the stored version is this one.
    pub expected_version: Option<u64>,
}

/// The enforcement settings of this instance: a cached copy plus the store behind it.
#[derive(Clone)]
pub struct Enforcement {
    current: Arc<ArcSwap<EnforcementSettings>>,
    loaded: Arc<AtomicBool>,
    store: Arc<dyn SettingsStore>,
    initial_mode: Mode,
}

impl Enforcement {
    /// Settings backed by `store`, starting (until loaded) from `initial_mode` at version 0.
    pub fn new(store: Arc<dyn SettingsStore>, initial_mode: Mode) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(EnforcementSettings::initial(
                initial_mode,
            ))),
            loaded: Arc::new(AtomicBool::new(false)),
            store,
            initial_mode,
        }
    }

    /// The settings in force on this instance.
    pub fn current(&self) -> Arc<EnforcementSettings> {
        self.current.load_full()
    }

    /// Whether the settings have been read from the store at least once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Re-reads the settings and applies them if they are newer than the ones in force.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let stored = self.store.load_settings().await?;
        if let Some(stored) = stored {
            self.apply(stored);
        }
        self.loaded.store(true, Ordering::Release);
        Ok(())
    }

    /// Puts `settings` in force unless newer ones already are.
    fn apply(&self, settings: EnforcementSettings) {
        let settings = Arc::new(settings);
        self.current.rcu(|current| {
            if settings.version > current.version {
                Arc::clone(&settings)
            } else {
                Arc::clone(current)
            }
        });
    }

    /// Reloads every `every` until `cancel` fires: the safety net that makes every instance
    /// converge and that recovers from a store outage without a restart.
    pub fn spawn_refresh(
        &self,
        every: Duration,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    _ = tick.tick() => {
                        if let Err(e) = this.reload().await {
                            tracing::warn!(error = %e, "enforcement settings not refreshed; keeping the last known");
                        }
                    }
                }
            }
        })
    }

    /// Changes the global mode on behalf of `actor`. Setting the mode already in force
    /// changes nothing and records nothing (the call is idempotent).
    pub async fn set_global(
        &self,
        actor: &str,
        change: GlobalChange,
    ) -> Result<EnforcementSettings, ChangeError> {
        let reason = change.reason.trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_LEN {
            return Err(ChangeError::InvalidReason);
        }
        for _ in 0..SAVE_ATTEMPTS {
            let base = self
                .store
                .load_settings()
                .await?
                .unwrap_or_else(|| EnforcementSettings::initial(self.initial_mode));
            if let Some(expected) = change.expected_version
                && expected != base.version
            {
                return Err(ChangeError::VersionConflict {
                    expected,
                    current: base.version,
                });
            }
            if base.mode == change.mode {
                self.apply(base.clone());
                return Ok(base);
            }
            let now = Timestamp::now();
            let next = EnforcementSettings {
                mode: change.mode,
                version: base.version + 1,
                updated_at: Some(now),
                updated_by: Some(actor.to_owned()),
            };
            let entry = HistoryEntry {
                version: next.version,
                at: now,
                actor: actor.to_owned(),
                change: "mode".into(),
                from: json!(base.mode),
                to: json!(next.mode),
                reason: reason.to_owned(),
            };
            match self.store.save_settings(&next, &entry).await? {
                SaveOutcome::Saved => {
                    tracing::info!(
                        actor,
                        from = base.mode.as_str(),
                        to = next.mode.as_str(),
                        version = next.version,
                        reason,
                        "global enforcement mode changed"
                    );
                    self.apply(next.clone());
                    return Ok(next);
                }
                SaveOutcome::VersionConflict { current } => {
                    if let Some(expected) = change.expected_version {
                        return Err(ChangeError::VersionConflict { expected, current });
                    }
                }
            }
        }
        Err(ChangeError::Store(StoreError::Unavailable(
            "settings kept changing under this update; retry".into(),
        )))
    }

    /// History entries, newest first.
    pub async fn history(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        self.store.history(before, limit).await
    }
}
