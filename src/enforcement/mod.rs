//! Enforcement settings: the mode in force, how it changes, how every instance learns of it.
//!
//! Every instance keeps the current [`EnforcementSettings`] in memory ([`Enforcement::in_force`]
//! is a lock-free read on the hot path). A change is a compare-and-set on the settings version
//! (two admins racing cannot lose an update) that also appends the history entry and
//! publishes the new settings, atomically. Instances apply what they are told through the
//! store's change feed ([`Enforcement::spawn_watch`]), re-read the record whenever they
//! (re)subscribe, and re-read it periodically as a safety net ([`Enforcement::spawn_refresh`]).
//! While the store is unreachable, the last known settings stay in force.
//!
//! Settings never fall back silently:
//! - Before they are known (never read, no [`Snapshot`]), checks are answered as ENFORCED with
//!   the store unavailable: `settings_unavailable` (see [`crate::decision::decide_without_settings`]).
//! - A snapshot of the last settings applied is kept on disk; at start its settings apply,
//!   marked stale until the store confirms them.
//! - Versions only move forward: a record that vanished, went back, or holds other settings
//!   at the version in force is restored from the settings in force, above every version seen,
//!   by a compare-and-set with a history entry (`restore`, actor `instance:{name}`). Of several
//!   instances restoring at once one wins; the others adopt its record.
//! - A fresh deployment (no record, nothing seen, no snapshot) is initialised with the initial
//!   mode at version 1, by a compare-and-set with a history entry (`initialise`), so every
//!   instance agrees on it.

mod reconcile;
mod routes;
mod snapshot;
mod status;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures_util::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::decision::Mode;
use crate::session_id::{IdError, check_name};
use crate::store::{SaveOutcome, SettingsStore, StoreError};
use crate::tasks;
use crate::timestamp::Timestamp;

pub use self::routes::routes;
pub use self::snapshot::{Snapshot, store_identity};
pub use self::status::{RecordState, SettingsSource, SettingsStatus};
pub use crate::records::settings::{
    EnforcementSettings, HistoryChange, HistoryEntry, rollout_bucket,
};

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
    /// `enforce_percent` is above 100.
    #[error("enforce_percent must be 0-100")]
    InvalidPercent,
    /// The endpoint name is not a valid name.
    #[error(transparent)]
    InvalidEndpoint(#[from] IdError),
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

/// One change to the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Replace the global mode and partial-rollout percentage.
    Global {
        /// The new global mode.
        mode: Mode,
        /// The new `enforce_percent` (`None`: everyone).
        enforce_percent: Option<u8>,
    },
    /// Set (`Some`) or remove (`None`) an endpoint's override.
    Endpoint {
        /// The endpoint name.
        name: String,
        /// Its mode, or `None` to follow the global mode again.
        mode: Option<Mode>,
    },
    /// Turn the kill switch on or off.
    KillSwitch(bool),
}

impl Change {
    fn validate(&self) -> Result<(), ChangeError> {
        match self {
            Change::Global {
                enforce_percent: Some(p),
                ..
            } if *p > 100 => Err(ChangeError::InvalidPercent),
            Change::Endpoint { name, .. } => Ok(check_name("endpoint", name)?),
            _ => Ok(()),
        }
    }

    /// Applies the change to `base`: the new settings (unversioned) and the history's
    /// (change, from, to), or `None` when it changes nothing.
    fn apply(
        &self,
        base: &EnforcementSettings,
    ) -> Option<(
        EnforcementSettings,
        HistoryChange,
        serde_json::Value,
        serde_json::Value,
    )> {
        let mut next = base.clone();
        let (label, from, to) = match self {
            Change::Global {
                mode,
                enforce_percent,
            } => {
                next.mode = *mode;
                next.enforce_percent = *enforce_percent;
                (
                    HistoryChange::Global,
                    json!({ "mode": base.mode, "enforce_percent": base.enforce_percent }),
                    json!({ "mode": mode, "enforce_percent": enforce_percent }),
                )
            }
            Change::Endpoint { name, mode } => {
                match mode {
                    Some(mode) => next.endpoints.insert(name.clone(), *mode),
                    None => next.endpoints.remove(name),
                };
                (
                    HistoryChange::Endpoint(name.clone()),
                    json!(base.endpoints.get(name)),
                    json!(mode),
                )
            }
            Change::KillSwitch(on) => {
                next.kill_switch = *on;
                (
                    HistoryChange::KillSwitch,
                    json!(base.kill_switch),
                    json!(on),
                )
            }
        };
        (next != *base).then_some((next, label, from, to))
    }
}

fn unix_millis_now() -> u64 {
    Timestamp::now().unix_millis()
}

/// The enforcement settings of this instance: a cached copy plus the store behind it.
#[derive(Clone)]
pub struct Enforcement {
    /// `None` until known (read from the store or the snapshot).
    current: Arc<ArcSwapOption<EnforcementSettings>>,
    /// What [`Self::current`] answers while nothing is known: ENFORCED, version 0.
    placeholder: Arc<EnforcementSettings>,
    loaded: Arc<AtomicBool>,
    from_snapshot: Arc<AtomicBool>,
    subscribed: Arc<AtomicBool>,
    last_sync_millis: Arc<AtomicU64>,
    record: Arc<AtomicU8>,
    record_version: Arc<AtomicU64>,
    restores: Arc<AtomicU64>,
    /// One reconciliation at a time per instance (the refresh and the watch both reload).
    reconciling: Arc<tokio::sync::Mutex<()>>,
    store: Arc<dyn SettingsStore>,
    snapshot: Option<Arc<Snapshot>>,
    audit: Option<Audit>,
    initial_mode: Mode,
    actor: String,
    refresh: Duration,
}

impl Enforcement {
    /// Settings backed by `store`. Nothing is known until the store is read
    /// ([`Self::reload`]) or a snapshot is loaded ([`Self::with_snapshot`]). A store with no
    /// record is initialised with `initial_mode` at version 1 by the first instance to read it.
    pub fn new(store: Arc<dyn SettingsStore>, initial_mode: Mode) -> Self {
        Self {
            current: Arc::new(ArcSwapOption::empty()),
            placeholder: Arc::new(EnforcementSettings::initial(Mode::Enforced)),
            loaded: Arc::new(AtomicBool::new(false)),
            from_snapshot: Arc::new(AtomicBool::new(false)),
            subscribed: Arc::new(AtomicBool::new(false)),
            last_sync_millis: Arc::new(AtomicU64::new(0)),
            record: Arc::new(AtomicU8::new(RecordState::Unknown as u8)),
            record_version: Arc::new(AtomicU64::new(0)),
            restores: Arc::new(AtomicU64::new(0)),
            reconciling: Arc::new(tokio::sync::Mutex::new(())),
            store,
            snapshot: None,
            audit: None,
            initial_mode,
            actor: "instance:gatehouse".to_owned(),
            refresh: Duration::from_secs(5),
        }
    }

    /// Sets the refresh period (default 5s) used by [`Self::spawn_refresh`] and by
    /// [`Self::may_be_stale`].
    pub fn with_refresh(mut self, every: Duration) -> Self {
        self.refresh = every;
        self
    }

    /// Names this instance in the history entries it writes itself (`instance:{name}`).
    pub fn with_instance(mut self, name: &str) -> Self {
        self.actor = format!("instance:{name}");
        self
    }

    /// Records the settings records this instance restores in `audit`, like an admin's change
    /// (`decision: change`, `reason: restore`, `user: instance:{name}`).
    pub fn with_audit(mut self, audit: Audit) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Keeps `snapshot` up to date with every change applied, and starts from its settings
    /// (marked stale until the store confirms them) when it holds usable ones.
    pub fn with_snapshot(mut self, snapshot: Snapshot) -> Self {
        if let Some(settings) = snapshot.load() {
            tracing::warn!(
                version = settings.version,
                mode = settings.mode.as_str(),
                path = %snapshot.path().display(),
                "starting from the settings snapshot until the store confirms it"
            );
            self.current.store(Some(Arc::new(settings)));
            self.from_snapshot.store(true, Ordering::Release);
        }
        self.snapshot = Some(Arc::new(snapshot));
        self
    }

    /// The settings in force, or `None` while none are known (checks are then answered
    /// `settings_unavailable`).
    pub fn in_force(&self) -> Option<Arc<EnforcementSettings>> {
        self.current.load_full()
    }

    /// The settings in force; while none are known, a placeholder at version 0 in ENFORCED
    /// (use [`Self::in_force`] to tell).
    pub fn current(&self) -> Arc<EnforcementSettings> {
        self.in_force()
            .unwrap_or_else(|| Arc::clone(&self.placeholder))
    }

    /// Whether the settings have been read from the store at least once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Whether the settings in force may be out of date: not subscribed to changes, or not
    /// confirmed against the store for three refresh periods.
    pub fn may_be_stale(&self) -> bool {
        let last = self.last_sync_millis.load(Ordering::Acquire);
        let age = Duration::from_millis(unix_millis_now().saturating_sub(last));
        !self.subscribed.load(Ordering::Acquire) || age > self.refresh * 3
    }

    /// Where the settings stand, for `/readyz` and `/metrics`.
    pub fn status(&self) -> SettingsStatus {
        let in_force = self.in_force();
        let source = match &in_force {
            None => SettingsSource::None,
            Some(_) if self.from_snapshot.load(Ordering::Acquire) => SettingsSource::Snapshot,
            Some(_) => SettingsSource::Store,
        };
        let record = RecordState::from_u8(self.record.load(Ordering::Acquire));
        SettingsStatus {
            source,
            version: in_force.map_or(0, |s| s.version),
            loaded: self.is_loaded(),
            stale: source != SettingsSource::Store || self.may_be_stale(),
            record,
            record_version: matches!(record, RecordState::Behind | RecordState::Diverged)
                .then(|| self.record_version.load(Ordering::Acquire)),
            restores: self.restores.load(Ordering::Acquire),
        }
    }

    fn synced(&self) {
        self.last_sync_millis
            .store(unix_millis_now(), Ordering::Release);
    }

    fn set_record(&self, state: RecordState, stored_version: u64) {
        self.record_version.store(stored_version, Ordering::Release);
        self.record.store(state as u8, Ordering::Release);
    }

    /// Puts `settings` in force unless newer ones already are (messages may arrive out of
    /// order with reloads; versions only move forward), and snapshots them.
    fn apply(&self, settings: EnforcementSettings) {
        let settings = Arc::new(settings);
        let previous = self.current.rcu(|current| match current {
            Some(current) if current.version >= settings.version => Some(Arc::clone(current)),
            _ => Some(Arc::clone(&settings)),
        });
        if previous
            .as_ref()
            .is_some_and(|p| p.version >= settings.version)
        {
            return;
        }
        tracing::info!(
            version = settings.version,
            mode = settings.mode.as_str(),
            kill_switch = settings.kill_switch,
            "enforcement settings applied"
        );
        if let Some(snapshot) = &self.snapshot {
            let snapshot = Arc::clone(snapshot);
            // Off the async threads: an fsync may take a while. The snapshot itself never
            // writes an older version over a newer one, whatever order these run in.
            tokio::task::spawn_blocking(move || {
                if let Err(e) = snapshot.save(&settings) {
                    tracing::warn!(path = %snapshot.path().display(), error = %e, "settings snapshot not written");
                }
            });
        }
    }

    /// Reloads every refresh period until `cancel` fires: the safety net that makes every instance
    /// converge even if a change notification is lost.
    pub fn spawn_refresh(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let every = self.refresh;
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

    /// Follows the store's change feed until `cancel` fires: applies every change as it is
    /// announced, and after each (re)subscription re-reads the record, so a change made while
    /// this instance was cut off is applied as soon as it is back.
    pub fn spawn_watch(&self, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let this = &this;
            let subscribe = || this.store.watch();
            let follow = |mut feed: crate::store::SettingsFeed| async move {
                this.subscribed.store(true, Ordering::Release);
                if let Err(e) = this.reload().await {
                    tracing::warn!(error = %e, "settings not re-read after subscribing");
                }
                // An announcement is a hint, never applied as such: Redis pub/sub ignores
                // database numbers, so another deployment on another database of the same
                // Redis announces on the same channel. Only this store's own record counts:
                // read and reconcile it (one round trip per change).
                while feed.next().await.is_some() {
                    let _ = this.reload().await;
                }
                this.subscribed.store(false, Ordering::Release);
                tracing::warn!("settings change feed lost; resubscribing");
            };
            tasks::resubscribe(&cancel, "settings", subscribe, follow).await;
        })
    }

    /// Makes `change` on behalf of `actor`: the settings now in force, and the history entry
    /// recorded. A change that changes nothing is not saved and not recorded (the call is
    /// idempotent): the entry is then `None`.
    ///
    /// A change is made on the store's record, never on one older than the settings in force:
    /// a record that is missing or behind is first restored (or, on a fresh store,
    /// initialised), so a change never produces a version lower than one seen.
    pub async fn change(
        &self,
        actor: &str,
        change: Change,
        reason: &str,
        expected_version: Option<u64>,
    ) -> Result<(EnforcementSettings, Option<HistoryEntry>), ChangeError> {
        // The length as sent (the published `maxLength`), the content once trimmed.
        if reason.chars().count() > MAX_REASON_LEN || reason.trim().is_empty() {
            return Err(ChangeError::InvalidReason);
        }
        let reason = reason.trim();
        change.validate()?;
        for _ in 0..SAVE_ATTEMPTS {
            let stored = self.store.load_settings().await?;
            let base = match stored {
                Some(stored) if Self::agrees(&stored, self.in_force().as_deref()) => stored,
                stored => {
                    let _one = self.reconciling.lock().await;
                    self.reconcile(stored).await?;
                    continue;
                }
            };
            if let Some(expected) = expected_version
                && expected != base.version
            {
                return Err(ChangeError::VersionConflict {
                    expected,
                    current: base.version,
                });
            }
            let Some((mut next, label, from, to)) = change.apply(&base) else {
                self.apply(base.clone());
                return Ok((base, None));
            };
            let now = Timestamp::now();
            next.version = base.version + 1;
            next.updated_at = Some(now);
            next.updated_by = Some(actor.to_owned());
            let entry = HistoryEntry {
                version: next.version,
                at: now,
                actor: actor.to_owned(),
                change: label,
                from,
                to,
                reason: reason.to_owned(),
            };
            match self
                .store
                .save_settings(base.version, &next, &entry)
                .await?
            {
                SaveOutcome::Saved => {
                    tracing::info!(actor, change = %entry.change, from = %entry.from, to = %entry.to, version = next.version, reason, "enforcement settings changed");
                    self.apply(next.clone());
                    return Ok((next, Some(entry)));
                }
                SaveOutcome::VersionConflict { current } => {
                    if let Some(expected) = expected_version {
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
