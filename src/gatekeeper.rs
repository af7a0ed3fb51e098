//! The gatekeeper: answers "may this user use this session?" for every entry point.
//!
//! `/v1/validate`, the batch endpoint and the [`crate::middleware::OwnershipLayer`] all call
//! [`Gatekeeper::check`]: resolve the mode from the settings in force, look the owner up only
//! when the mode needs it, apply the pure [`decide`], and log what was denied or would have
//! been, and record it in the audit stream; every decision is counted in the time series
//! ([`crate::stats`]).

use std::sync::Arc;
use std::time::Instant;

use crate::throttle::Throttle;

use crate::audit::{Audit, AuditEvent, Source};
use crate::decision::{
    Mode, Outcome, OwnerLookup, Subject, Verdict, decide, decide_without_settings,
};
use crate::enforcement::Enforcement;
use crate::metrics::Metrics;
use crate::session_id::{SessionId, SessionIds};
use crate::stats::DecisionStats;
use crate::store::{OwnershipStore, StoreError};

/// The endpoint name used when a caller names none.
pub const DEFAULT_ENDPOINT: &str = "default";

/// One question: may `user` use `session` through `endpoint`?
#[derive(Debug, Clone)]
pub struct Check<'a> {
    /// Who is asking to use the session.
    pub user: &'a str,
    /// Whether that user is an admin.
    pub is_admin: bool,
    /// The session.
    pub session: &'a SessionId,
    /// The endpoint name whose mode applies.
    pub endpoint: &'a str,
    /// Where the question comes from (for the audit stream).
    pub origin: &'a Origin,
}

/// Where a check comes from: the audit stream's request fields.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Which entry point asked.
    pub source: Source,
    /// The HTTP method of the request being checked, when known.
    pub method: Option<String>,
    /// The path of the request being checked, when known.
    pub path: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// The client's address.
    pub client_ip: Option<std::net::IpAddr>,
}

impl Origin {
    /// An origin with only its source known.
    pub fn new(source: Source) -> Self {
        Self {
            source,
            method: None,
            path: None,
            request_id: None,
            client_ip: None,
        }
    }
}

/// The answer to a [`Check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The decision.
    pub outcome: Outcome,
    /// The owner the store reported, when it was looked up.
    pub owner: Option<String>,
    /// The lookup was needed and failed: `owner` is unknown, not absent.
    pub lookup_failed: bool,
}

/// Decides checks against the settings in force and the ownership store.
#[derive(Clone)]
pub struct Gatekeeper {
    store: Arc<dyn OwnershipStore>,
    enforcement: Enforcement,
    audit: Audit,
    metrics: Option<Arc<Metrics>>,
    stats: DecisionStats,
    session_ids: SessionIds,
}

impl Gatekeeper {
    /// A gatekeeper over `store`, applying the modes of `enforcement`. It logs what it denies;
    /// add [`Self::with_audit`] to record it in the audit stream.
    pub fn new(store: Arc<dyn OwnershipStore>, enforcement: Enforcement) -> Self {
        Self {
            store,
            enforcement,
            audit: Audit::disabled("gatehouse"),
            metrics: None,
            stats: DecisionStats::disabled(),
            session_ids: SessionIds::default(),
        }
    }

    /// Reads session ids with `policy` (`GATEHOUSE_SESSION_IDS`; default canonical).
    pub fn with_session_ids(mut self, policy: SessionIds) -> Self {
        self.session_ids = policy;
        self
    }

    /// How every entry point built on this gatekeeper reads the session ids callers send.
    pub fn session_ids(&self) -> SessionIds {
        self.session_ids
    }

    /// Records denials, would-denials and unavailable lookups through `audit`.
    pub fn with_audit(mut self, audit: Audit) -> Self {
        self.audit = audit;
        self
    }

    /// Counts decisions in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Counts every decision in the time series of `stats`.
    pub fn with_stats(mut self, stats: DecisionStats) -> Self {
        self.stats = stats;
        self
    }

    /// The settings this gatekeeper applies.
    pub fn enforcement(&self) -> &Enforcement {
        &self.enforcement
    }

    /// Decides one check. `pinned` overrides the configured mode (gatehouse's own session API
    /// is always enforced).
    ///
    /// Without a pinned mode and with the settings unknown (never read, no snapshot), the
    /// check is answered as ENFORCED with the store unavailable: `settings_unavailable`.
    pub async fn check(&self, check: &Check<'_>, pinned: Option<Mode>) -> CheckResult {
        let started = Instant::now();
        let mode = match pinned {
            Some(mode) => mode,
            None => match self.enforcement.in_force() {
                Some(settings) => settings.mode_for(check.endpoint, check.user),
                None => return self.without_settings(check),
            },
        };
        let looked_up = if mode.needs_lookup() {
            Some(self.store.owner(check.session).await)
        } else {
            None
        };
        let result = self.conclude(check, mode, looked_up);
        self.timed(check, started);
        result
    }

    /// Observes how long deciding `check` took.
    fn timed(&self, check: &Check<'_>, started: Instant) {
        if let Some(metrics) = &self.metrics {
            metrics.decided_in(check.origin.source, started.elapsed());
        }
    }

    /// Decides several checks, looking all needed owners up in one round trip. Results are in
    /// the order of `checks`.
    pub async fn check_many(&self, checks: &[Check<'_>]) -> Vec<CheckResult> {
        let started = Instant::now();
        let Some(settings) = self.enforcement.in_force() else {
            return checks.iter().map(|c| self.without_settings(c)).collect();
        };
        let modes: Vec<Mode> = checks
            .iter()
            .map(|c| settings.mode_for(c.endpoint, c.user))
            .collect();
        let wanted: Vec<SessionId> = checks
            .iter()
            .zip(&modes)
            .filter(|(_, mode)| mode.needs_lookup())
            .map(|(c, _)| c.session.clone())
            .collect();
        let mut owners = match self.store.owners(&wanted).await {
            Ok(owners) => owners.into_iter().map(Ok).collect::<Vec<_>>(),
            // One unreadable key (of the wrong type) fails the whole batch read: ask for each
            // on its own, so that it fails only its own check.
            Err(StoreError::Corrupt(_)) => {
                futures_util::future::join_all(wanted.iter().map(|s| self.store.owner(s))).await
            }
            Err(e) => vec![Err(e); wanted.len()],
        }
        .into_iter();
        checks
            .iter()
            .zip(modes)
            .map(|(check, mode)| {
                let looked_up = if mode.needs_lookup() {
                    owners.next()
                } else {
                    None
                };
                let result = self.conclude(check, mode, looked_up);
                self.timed(check, started);
                result
            })
            .collect()
    }

    /// The answer while the settings are unknown: no lookup, see [`decide_without_settings`].
    fn without_settings(&self, check: &Check<'_>) -> CheckResult {
        let subject = Subject {
            user: check.user,
            is_admin: check.is_admin,
        };
        let outcome = decide_without_settings(&subject);
        self.record(check, outcome, None);
        CheckResult {
            outcome,
            owner: None,
            lookup_failed: false,
        }
    }

    /// Decides `check` under `mode` from an owner already looked up (`None`: not needed),
    /// and counts, logs and audits it like [`Self::check`] (for a caller whose store write
    /// read the owner atomically, e.g. a release).
    pub(crate) fn conclude(
        &self,
        check: &Check<'_>,
        mode: Mode,
        looked_up: Option<Result<Option<String>, crate::store::StoreError>>,
    ) -> CheckResult {
        let subject = Subject {
            user: check.user,
            is_admin: check.is_admin,
        };
        let (lookup, owner) = match &looked_up {
            None => (OwnerLookup::Skipped, None),
            Some(Ok(owner)) => (OwnerLookup::Found(owner.as_deref()), owner.clone()),
            Some(Err(e)) => {
                static LOOKUPS: Throttle = Throttle::new();
                if let Some(suppressed) = LOOKUPS.allow() {
                    tracing::warn!(session_id = %check.session, error = %e, suppressed, "owner lookup failed (one line per second; suppressed: those since the last)");
                }
                (OwnerLookup::Unavailable, None)
            }
        };
        let outcome = decide(mode, &subject, lookup);
        self.record(check, outcome, owner.as_deref());
        CheckResult {
            outcome,
            owner,
            lookup_failed: lookup == OwnerLookup::Unavailable,
        }
    }

    /// Counts, audits and logs one decision.
    fn record(&self, check: &Check<'_>, outcome: Outcome, owner: Option<&str>) {
        let mode = outcome.mode;
        let source = check.origin.source;
        if let Some(metrics) = &self.metrics {
            metrics.decision(outcome.verdict, outcome.reason, source);
        }
        self.stats
            .record(check.endpoint, outcome.verdict, outcome.reason, || {
                self.enforcement
                    .in_force()
                    .is_some_and(|s| s.endpoints.contains_key(check.endpoint))
            });
        if outcome.verdict != Verdict::Allow || outcome.reason.is_unavailable() {
            let origin = check.origin;
            let mut event = AuditEvent::decision(
                outcome.verdict,
                outcome.reason,
                mode,
                source,
                self.audit.instance(),
            );
            event.user = check.user.to_owned();
            event.session_id = Some(check.session.as_str().to_owned());
            event.owner = owner.map(str::to_owned);
            event.endpoint = Some(check.endpoint.to_owned());
            event.method.clone_from(&origin.method);
            event.path.clone_from(&origin.path);
            event.request_id.clone_from(&origin.request_id);
            event.client_ip = origin.client_ip.map(|ip| ip.to_string());
            self.audit.record(event);
        }
        if outcome.verdict != Verdict::Allow {
            tracing::info!(
                decision = outcome.verdict.as_str(),
                reason = outcome.reason.as_str(),
                mode = mode.as_str(),
                user = check.user,
                session_id = %check.session,
                endpoint = check.endpoint,
                owner,
                "{}",
                if outcome.verdict == Verdict::WouldDeny { "would deny" } else { "denied" }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Reason;
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn unknown_settings_deny_every_unpinned_check_without_a_lookup() {
        let store = Arc::new(MemoryStore::new(None));
        let session = SessionId::parse("s1").unwrap();
        store.claim(&session, "alice").await.unwrap();
        let gatekeeper = Gatekeeper::new(
            store.clone(),
            Enforcement::new(store.clone(), Mode::Disabled),
        );
        let origin = Origin::new(crate::audit::Source::Middleware);
        let check = |user, is_admin| Check {
            user,
            is_admin,
            session: &session,
            endpoint: DEFAULT_ENDPOINT,
            origin: &origin,
        };
        let owner = check("alice", false);
        let result = gatekeeper.check(&owner, None).await;
        assert_eq!(
            (
                result.outcome.verdict,
                result.outcome.reason,
                result.outcome.mode
            ),
            (Verdict::Deny, Reason::SettingsUnavailable, Mode::Enforced)
        );
        assert_eq!(result.owner, None, "no lookup was made");
        let many = gatekeeper
            .check_many(&[owner.clone(), check("root", true)])
            .await;
        assert_eq!(many[0].outcome.reason, Reason::SettingsUnavailable);
        assert_eq!(many[1].outcome.reason, Reason::Admin);
        // A pinned mode does not depend on the settings.
        let pinned = gatekeeper.check(&owner, Some(Mode::Enforced)).await;
        assert_eq!(pinned.outcome.reason, Reason::Owner);
        // Once read (a fresh store: initialised with DISABLED), the settings apply.
        gatekeeper.enforcement().reload().await.unwrap();
        let result = gatekeeper.check(&check("bob", false), None).await;
        assert_eq!(result.outcome.reason, Reason::EnforcementDisabled);
    }
}
