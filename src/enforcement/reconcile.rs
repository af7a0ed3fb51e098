//! Reconciling the store's settings record with the settings in force: versions only move
//! forward, a fresh store is initialised, and a record the store lost is restored (see the
//! [module docs](super)).

use std::sync::atomic::Ordering;

use super::{
    Enforcement, EnforcementSettings, HistoryChange, HistoryEntry, RecordState, SAVE_ATTEMPTS,
};
use crate::store::{SaveOutcome, StoreError};
use crate::timestamp::Timestamp;

/// What reconciling the store's record with the settings in force came to.
pub(super) enum Reconciled {
    /// In agreement.
    Settled,
    /// Someone else wrote meanwhile: read again.
    Retry,
}

impl Enforcement {
    /// Re-reads the settings record and reconciles it with the settings in force.
    ///
    /// Versions only ever move forward. A newer record is applied. A store with no record,
    /// on an instance that has seen none, is a fresh deployment: the record is initialised
    /// with the initial mode at version 1 (a compare-and-set, so every instance agrees on it).
    /// A record that vanished, went back in version or holds other settings at the version in
    /// force (the store lost data) is restored from the settings in force at the next version,
    /// by a compare-and-set with a history entry: of several instances doing so at once, one
    /// wins and the others adopt its record.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _one = self.reconciling.lock().await;
        for _ in 0..SAVE_ATTEMPTS {
            let stored = match self.store.load_settings().await {
                Ok(stored) => stored,
                Err(e) => {
                    // Unreachable or unreadable (a corrupt record is left for an operator to
                    // look at, never overwritten): the settings in force stay.
                    self.set_record(RecordState::Unknown, 0);
                    return Err(e);
                }
            };
            if let Reconciled::Settled = self.reconcile(stored).await? {
                self.loaded.store(true, Ordering::Release);
                self.from_snapshot.store(false, Ordering::Release);
                self.synced();
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(
            "the settings record kept changing while being reconciled".into(),
        ))
    }

    /// Whether `stored` may simply be applied (or is already): newer than what is in force, or
    /// the same version with the same settings.
    pub(super) fn agrees(stored: &EnforcementSettings, seen: Option<&EnforcementSettings>) -> bool {
        seen.is_none_or(|seen| {
            stored.version > seen.version
                || (stored.version == seen.version && stored.same_policy(seen))
        })
    }

    /// One step of [`Self::reload`] on the record just read. Call with `reconciling` held.
    pub(super) async fn reconcile(
        &self,
        stored: Option<EnforcementSettings>,
    ) -> Result<Reconciled, StoreError> {
        let stored_version = stored.as_ref().map_or(0, |s| s.version);
        let (state, seen) = match (&stored, self.in_force()) {
            (None, None) => return self.initialise().await,
            (None, Some(seen)) => (RecordState::Missing, seen),
            (Some(stored), seen) if Self::agrees(stored, seen.as_deref()) => {
                self.set_record(RecordState::Ok, stored_version);
                self.apply(stored.clone());
                return Ok(Reconciled::Settled);
            }
            (Some(stored), Some(seen)) if stored.version < seen.version => {
                (RecordState::Behind, seen)
            }
            (Some(_), Some(seen)) => (RecordState::Diverged, seen),
            // `agrees` holds whenever nothing is in force.
            (Some(stored), None) => {
                self.apply(stored.clone());
                return Ok(Reconciled::Settled);
            }
        };
        if self.record.load(Ordering::Acquire) != state as u8 {
            tracing::warn!(
                record = state.as_str(),
                stored = stored_version,
                in_force = seen.version,
                "the store lost the enforcement settings; keeping them and restoring the record"
            );
        }
        self.set_record(state, stored_version);
        self.restore(state, stored.as_ref(), &seen).await
    }

    /// Writes the settings in force back to a store that lost them, above every version seen.
    async fn restore(
        &self,
        state: RecordState,
        stored: Option<&EnforcementSettings>,
        seen: &EnforcementSettings,
    ) -> Result<Reconciled, StoreError> {
        let expected = stored.map_or(0, |s| s.version);
        let now = Timestamp::now();
        let mut next = seen.clone();
        next.version = seen.version.max(expected) + 1;
        next.updated_at = Some(now);
        next.updated_by = Some(self.actor.clone());
        let why = match state {
            RecordState::Missing => "the settings record vanished from the store".to_owned(),
            RecordState::Behind => {
                format!("the store's settings record went back to version {expected}")
            }
            _ => format!(
                "the store held other settings at version {expected}, the version this instance had"
            ),
        };
        let entry = HistoryEntry {
            version: next.version,
            at: now,
            actor: self.actor.clone(),
            change: HistoryChange::Restore,
            from: stored.map_or(serde_json::Value::Null, EnforcementSettings::policy_json),
            to: seen.policy_json(),
            reason: format!(
                "restored after {why}; this instance had version {}",
                seen.version
            ),
        };
        match self.store.save_settings(expected, &next, &entry).await? {
            SaveOutcome::Saved => {
                tracing::warn!(version = next.version, reason = %entry.reason, "enforcement settings record restored");
                self.restores.fetch_add(1, Ordering::AcqRel);
                self.set_record(RecordState::Ok, next.version);
                self.audit_own_change(&entry);
                self.apply(next);
                Ok(Reconciled::Settled)
            }
            SaveOutcome::VersionConflict { .. } => Ok(Reconciled::Retry),
        }
    }

    /// Writes the first record of a fresh deployment: the initial mode at version 1.
    async fn initialise(&self) -> Result<Reconciled, StoreError> {
        let now = Timestamp::now();
        let mut next = EnforcementSettings::initial(self.initial_mode);
        next.version = 1;
        next.updated_at = Some(now);
        next.updated_by = Some(self.actor.clone());
        let entry = HistoryEntry {
            version: 1,
            at: now,
            actor: self.actor.clone(),
            change: HistoryChange::Initialise,
            from: serde_json::Value::Null,
            to: next.policy_json(),
            reason: format!(
                "initialised: the store had no settings record and this instance had seen none (GATEHOUSE_INITIAL_MODE={})",
                self.initial_mode.as_str()
            ),
        };
        match self.store.save_settings(0, &next, &entry).await? {
            SaveOutcome::Saved => {
                tracing::info!(
                    mode = next.mode.as_str(),
                    "enforcement settings initialised"
                );
                self.restores.fetch_add(1, Ordering::AcqRel);
                self.set_record(RecordState::Ok, 1);
                // In the history only: the start of a deployment, not an incident.
                self.apply(next);
                Ok(Reconciled::Settled)
            }
            SaveOutcome::VersionConflict { .. } => Ok(Reconciled::Retry),
        }
    }

    /// Records `entry`, written by this instance itself, in the audit stream.
    fn audit_own_change(&self, entry: &HistoryEntry) {
        let Some(audit) = &self.audit else {
            return;
        };
        audit.record(entry.audit_event(audit.instance()));
    }
}
