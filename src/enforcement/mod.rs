//! Enforcement settings: the mode in force, how it changes, how every instance learns of it.
//!
//! Every instance keeps the current [`EnforcementSettings`] in memory ([`Enforcement::current`]
//! is a lock-free read on the hot path). A change is a compare-and-set on the settings version
//! (two admins racing cannot lose an update) that also appends the history entry and
//! publishes the new settings, atomically. Instances apply what they are told through the
//! store's change feed ([`Enforcement::spawn_watch`]), re-read the record whenever they
//! (re)subscribe, and re-read it periodically as a safety net ([`Enforcement::spawn_refresh`]).
//! While the store is unreachable, the last known settings stay in force.

mod routes;
mod settings;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::decision::Mode;
use crate::session_id::{IdError, check_name};
use crate::store::{SaveOutcome, SettingsStore, StoreError};
use crate::timestamp::Timestamp;

pub use self::routes::routes;
pub use self::settings::{EnforcementSettings, HistoryEntry, rollout_bucket};

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
        String,
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
                    "global".to_owned(),
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
                    format!("endpoint:{name}"),
                    json!(base.endpoints.get(name)),
                    json!(mode),
                )
            }
            Change::KillSwitch(on) => {
                next.kill_switch = *on;
                ("kill_switch".to_owned(), json!(base.kill_switch), json!(on))
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
    current: Arc<ArcSwap<EnforcementSettings>>,
    loaded: Arc<AtomicBool>,
    subscribed: Arc<AtomicBool>,
    last_sync_millis: Arc<AtomicU64>,
    store: Arc<dyn SettingsStore>,
    initial_mode: Mode,
    refresh: Duration,
}

impl Enforcement {
    /// Settings backed by `store`, starting (until loaded) from `initial_mode` at version 0.
    pub fn new(store: Arc<dyn SettingsStore>, initial_mode: Mode) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(EnforcementSettings::initial(
                initial_mode,
            ))),
            loaded: Arc::new(AtomicBool::new(false)),
            subscribed: Arc::new(AtomicBool::new(false)),
            last_sync_millis: Arc::new(AtomicU64::new(0)),
            store,
            initial_mode,
            refresh: Duration::from_secs(5),
        }
    }

    /// Sets the refresh period (default 5s) used by [`Self::spawn_refresh`] and by
    /// [`Self::may_be_stale`].
    pub fn with_refresh(mut self, every: Duration) -> Self {
        self.refresh = every;
        self
    }

    /// The settings in force on this instance.
    pub fn current(&self) -> Arc<EnforcementSettings> {
        self.current.load_full()
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

    fn synced(&self) {
        self.last_sync_millis
            .store(unix_millis_now(), Ordering::Release);
    }

    /// Re-reads the settings and puts them in force.
    ///
    /// Versions normally only move forward, but a store that lost its data (a Redis restarted
    /// without persistence, a failover to a lagging replica) holds an older version than the
    /// one in force. The store is the truth: once a second read confirms it went back, its
    /// settings replace the ones in force (with a warning), or every later change, kill switch
    /// included, would be ignored as "older".
    pub async fn reload(&self) -> Result<(), StoreError> {
        let stored = self.store.load_settings().await?;
        let in_force = self.current().version;
        match stored {
            Some(stored) if stored.version >= in_force => self.apply(stored),
            _ if in_force == 0 => {}
            _ => {
                // Maybe an announcement overtook this read; a second read tells.
                let again = self.store.load_settings().await?;
                let again_version = again.as_ref().map_or(0, |s| s.version);
                if again_version < self.current().version {
                    let settings =
                        again.unwrap_or_else(|| EnforcementSettings::initial(self.initial_mode));
                    tracing::warn!(
                        in_force = self.current().version,
                        stored = again_version,
                        "the store's enforcement settings went back in version (data lost?); applying what it holds"
                    );
                    self.current.store(Arc::new(settings));
                } else if let Some(again) = again {
                    self.apply(again);
                }
            }
        }
        self.loaded.store(true, Ordering::Release);
        self.synced();
        Ok(())
    }

    /// Puts `settings` in force unless newer ones already are (messages may arrive out of
    /// order with reloads; versions only move forward).
    fn apply(&self, settings: EnforcementSettings) {
        let settings = Arc::new(settings);
        let previous = self.current.rcu(|current| {
            if settings.version > current.version {
                Arc::clone(&settings)
            } else {
                Arc::clone(current)
            }
        });
        if settings.version > previous.version {
            tracing::info!(
                version = settings.version,
                mode = settings.mode.as_str(),
                kill_switch = settings.kill_switch,
                "enforcement settings applied"
            );
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
            let mut backoff = Duration::from_millis(50);
            loop {
                match this.store.watch().await {
                    Ok(mut feed) => {
                        this.subscribed.store(true, Ordering::Release);
                        if let Err(e) = this.reload().await {
                            tracing::warn!(error = %e, "settings not re-read after subscribing");
                        }
                        backoff = Duration::from_millis(50);
                        loop {
                            tokio::select! {
                                () = cancel.cancelled() => return,
                                item = feed.next() => match item {
                                    Some(Some(settings)) => {
                                        this.apply(settings);
                                        this.synced();
                                    }
                                    Some(None) => {
                                        let _ = this.reload().await;
                                    }
                                    None => break,
                                },
                            }
                        }
                        this.subscribed.store(false, Ordering::Release);
                        tracing::warn!("settings change feed lost; resubscribing");
                    }
                    Err(e) => tracing::debug!(error = %e, "settings change feed unavailable"),
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        })
    }

    /// Makes `change` on behalf of `actor`: the settings now in force, and the history entry
    /// recorded. A change that changes nothing is not saved and not recorded (the call is
    /// idempotent): the entry is then `None`.
    pub async fn change(
        &self,
        actor: &str,
        change: Change,
        reason: &str,
        expected_version: Option<u64>,
    ) -> Result<(EnforcementSettings, Option<HistoryEntry>), ChangeError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_LEN {
            return Err(ChangeError::InvalidReason);
        }
        change.validate()?;
        for _ in 0..SAVE_ATTEMPTS {
            let base = self
                .store
                .load_settings()
                .await?
                .unwrap_or_else(|| EnforcementSettings::initial(self.initial_mode));
            if let Some(expected) = expected_version
                && expected != base.version
            {
                return Err(ChangeError::VersionConflict {
                    expected,
                    current: base.version,
                });
            }
            // What is in force is newer than the store: the store lost data (see `reload`).
            let store_went_back = self.current().version > base.version;
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
            match self.store.save_settings(&next, &entry).await? {
                SaveOutcome::Saved => {
                    tracing::info!(actor, change = %entry.change, from = %entry.from, to = %entry.to, version = next.version, reason, "enforcement settings changed");
                    if store_went_back {
                        self.current.store(Arc::new(next.clone()));
                    } else {
                        self.apply(next.clone());
                    }
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
