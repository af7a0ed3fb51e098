//! Identity providers: issuers whose keys gatehouse fetches from a JWKS URL, given or found
//! by OpenID Connect discovery, and keeps fresh.
//!
//! Each provider's [`RemoteKeys`] holds the last good key set and fetches it again:
//! - periodically, every `max-age` of the JWKS answer's `Cache-Control` clamped to
//!   [`JwksSettings::refresh_min`]..[`JwksSettings::refresh_max`], or
//!   [`JwksSettings::refresh`] when the answer says nothing; after a failure, sooner (1 s
//!   doubling up to `refresh_min`, then every `refresh_min`);
//! - when a token names a `kid` the set does not have (the provider rotated keys): coalesced,
//!   one fetch at a time, and a request that waited for a fetch in flight takes that fetch's
//!   result instead of starting another; and rate-limited, no fetch when one started less than
//!   [`JwksSettings::refetch_interval`] ago, so a flood of made-up `kid`s costs the provider
//!   at most one fetch per interval.
//!
//! A failed fetch (unreachable, a TLS error, not a 200, too large, not a JWKS, no usable key)
//! leaves the last good set in force; nothing is ever merged: a set that was taken replaces the
//! previous one whole, so a key the provider withdrew is gone at the next refresh (and with it
//! every token it verified, see [`super::keyset`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use jsonwebtoken::Algorithm;
use tokio_util::sync::CancellationToken;

use super::claims::ClaimMapping;
use super::fetch::{FetchError, Fetcher};
use super::keyset::{KeySet, Rules};
use crate::tasks::Backoff;

/// Where an identity provider's keys are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysAt {
    /// This JWKS URL (`https://`).
    JwksUrl(String),
    /// The `jwks_uri` of the issuer's OpenID Connect discovery document
    /// (`{issuer}/.well-known/openid-configuration`), whose `issuer` must be the configured one,
    /// exactly.
    Discovery,
}

/// An issuer whose keys are fetched: its tokens carry `iss` = [`Self::issuer`].
#[derive(Clone)]
pub struct IdentityProvider {
    /// The `iss` of its tokens, exactly (Keycloak: `https://host/realms/name`; Auth0:
    /// `https://tenant.auth0.com/`, with the slash).
    pub issuer: String,
    /// Where its keys are.
    pub keys_at: KeysAt,
    /// The required `aud`: an identity provider issues tokens for many applications.
    pub audience: String,
    /// The algorithms its keys may verify (never empty, never HMAC).
    pub algorithms: Vec<Algorithm>,
    /// Where its tokens carry roles and scopes.
    pub claims: ClaimMapping,
    /// A PEM CA bundle trusted instead of the system's roots.
    pub ca: Option<Vec<u8>>,
    /// Where it was configured, for messages (`GATEHOUSE_JWT_JWKS_URL`,
    /// `GATEHOUSE_CONFIG: jwt_issuers[2]`).
    pub origin: String,
}

/// Names the provider, never the CA bundle.
impl std::fmt::Debug for IdentityProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityProvider")
            .field("issuer", &self.issuer)
            .field("keys_at", &self.keys_at)
            .field("audience", &self.audience)
            .field("algorithms", &self.algorithms)
            .field("claims", &self.claims)
            .field("ca", &self.ca.as_ref().map(|_| "PEM"))
            .field("origin", &self.origin)
            .finish()
    }
}

/// How the keys of every identity provider are fetched and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksSettings {
    /// Refresh period when the JWKS answer has no `Cache-Control: max-age`
    /// (`GATEHOUSE_JWT_JWKS_REFRESH`, 15 min).
    pub refresh: Duration,
    /// The shortest period a `max-age` may set (`GATEHOUSE_JWT_JWKS_REFRESH_MIN`, 1 min); also
    /// the longest wait between attempts after a failure.
    pub refresh_min: Duration,
    /// The longest (`GATEHOUSE_JWT_JWKS_REFRESH_MAX`, 24 h).
    pub refresh_max: Duration,
    /// At most one fetch for an unknown `kid` per this, per provider
    /// (`GATEHOUSE_JWT_JWKS_REFETCH_INTERVAL`, 10 s).
    pub refetch_interval: Duration,
    /// Bound on one fetch, connect to last byte (`GATEHOUSE_JWT_JWKS_TIMEOUT`, 5 s).
    pub timeout: Duration,
    /// Start without the keys and wait for them (`GATEHOUSE_JWT_WAIT_FOR_KEYS`, off: a
    /// provider whose keys cannot be fetched at start stops the start).
    pub wait_for_keys: bool,
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(15 * 60),
            refresh_min: Duration::from_secs(60),
            refresh_max: Duration::from_secs(24 * 3600),
            refetch_interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            wait_for_keys: false,
        }
    }
}

impl JwksSettings {
    /// The refresh period after an answer with `max_age`.
    pub fn period(&self, max_age: Option<Duration>) -> Duration {
        match max_age {
            Some(age) => age.clamp(self.refresh_min, self.refresh_max),
            None => self.refresh,
        }
    }
}

/// Fetches so far, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchCounts {
    /// A key set taken.
    pub ok: u64,
    /// No answer, or not a 200.
    pub error: u64,
    /// An answer that could not be taken.
    pub invalid: u64,
}

/// Where a provider's keys stand (for `/readyz` and `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderStatus {
    /// The issuer.
    pub issuer: String,
    /// Keys in force (0: never loaded).
    pub keys: usize,
    /// Since the keys in force were fetched; `None`: never loaded.
    pub age: Option<Duration>,
    /// When the last fetch failed: why (the last good keys stay in force).
    pub last_error: Option<String>,
    /// Fetches so far.
    pub fetches: FetchCounts,
}

struct State {
    /// The JWKS URL: configured, or discovered (`None`: discover first).
    jwks_uri: Option<String>,
    /// When the last fetch started (the rate limit of refetches).
    started: Option<Instant>,
    /// When the keys in force were fetched.
    loaded: Option<(Instant, SystemTime)>,
    last_error: Option<String>,
    /// When the periodic refresh is due next.
    due: Instant,
    backoff: Backoff,
    counts: FetchCounts,
}

/// One provider's keys, fetched and kept fresh.
pub(crate) struct RemoteKeys {
    provider: IdentityProvider,
    settings: JwksSettings,
    rules: Rules,
    fetcher: Fetcher,
    current: ArcSwapOption<KeySet>,
    /// Held while fetching: one fetch at a time.
    one_fetch: tokio::sync::Mutex<()>,
    /// Fetches finished, whatever their outcome: one that waited for a fetch in flight sees
    /// this change and takes that fetch's result.
    finished: AtomicU64,
    /// Tells the refresh task that `due` moved (a fetch for an unknown kid failed).
    rescheduled: tokio::sync::Notify,
    state: std::sync::Mutex<State>,
}

#[derive(serde::Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl RemoteKeys {
    /// A provider's keys, not fetched yet.
    pub fn new(provider: IdentityProvider, settings: JwksSettings) -> Result<Self, String> {
        let fetcher = Fetcher::new(provider.ca.as_deref(), settings.timeout)?;
        let jwks_uri = match &provider.keys_at {
            KeysAt::JwksUrl(url) => Some(url.clone()),
            KeysAt::Discovery => None,
        };
        let rules = Rules {
            issuer: Some(provider.issuer.clone()),
            audience: Some(provider.audience.clone()),
        };
        Ok(Self {
            fetcher,
            rules,
            settings,
            current: ArcSwapOption::empty(),
            one_fetch: tokio::sync::Mutex::new(()),
            finished: AtomicU64::new(0),
            rescheduled: tokio::sync::Notify::new(),
            state: std::sync::Mutex::new(State {
                jwks_uri,
                started: None,
                loaded: None,
                last_error: None,
                due: Instant::now(),
                backoff: Backoff::new(
                    Duration::from_secs(1).min(settings.refresh_min),
                    settings.refresh_min,
                ),
                counts: FetchCounts::default(),
            }),
            provider,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The provider.
    pub fn provider(&self) -> &IdentityProvider {
        &self.provider
    }

    /// The keys in force; `None` before the first fetch that succeeded.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    /// Fetches finished so far: read before looking a `kid` up, passed to [`Self::refetch`].
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::Acquire)
    }

    /// Fetches now, after any fetch in flight (start-up, and the refresh task).
    pub async fn fetch(&self) -> Result<(), FetchError> {
        let _one = self.one_fetch.lock().await;
        self.fetch_locked().await
    }

    /// For a token whose `kid` the set did not have when `seen` fetches had finished: fetches
    /// again, unless a fetch finished meanwhile (its result is the answer) or one started
    /// less than the refetch interval ago (the answer stays no).
    pub async fn refetch(&self, seen: u64) {
        let _one = self.one_fetch.lock().await;
        if self.finished() != seen {
            return;
        }
        let recent = self
            .state()
            .started
            .is_some_and(|at| at.elapsed() < self.settings.refetch_interval);
        if recent {
            return;
        }
        let _ = self.fetch_locked().await;
        // The refresh is due at another time now.
        self.rescheduled.notify_one();
    }

    /// One fetch; `one_fetch` is held.
    async fn fetch_locked(&self) -> Result<(), FetchError> {
        let known = {
            let mut state = self.state();
            state.started = Some(Instant::now());
            state.jwks_uri.clone()
        };
        let result = self.download(known).await;
        let mut state = self.state();
        let outcome = match result {
            Ok((set, uri, max_age, skipped)) => {
                let now = Instant::now();
                let period = self.settings.period(max_age);
                let previous = self.current.load_full();
                let changed = previous
                    .as_ref()
                    .is_none_or(|p| p.serials() != set.serials());
                if changed || state.last_error.is_some() {
                    tracing::info!(
                        issuer = %self.provider.issuer,
                        kids = ?set.kids(),
                        refresh_in = ?period,
                        left_out = %skipped.join("; "),
                        "identity provider keys in force"
                    );
                } else {
                    tracing::debug!(issuer = %self.provider.issuer, refresh_in = ?period, "identity provider keys unchanged");
                }
                self.current.store(Some(Arc::new(set)));
                state.jwks_uri = Some(uri);
                state.loaded = Some((now, SystemTime::now()));
                state.last_error = None;
                state.backoff.reset();
                state.due = now + period;
                state.counts.ok += 1;
                Ok(())
            }
            Err(e) => {
                match e {
                    FetchError::Unreachable(_) => state.counts.error += 1,
                    FetchError::Invalid(_) => state.counts.invalid += 1,
                }
                if self.provider.keys_at == KeysAt::Discovery {
                    // The document may have moved the keys: ask again next time.
                    state.jwks_uri = None;
                }
                let wait = state.backoff.next_wait();
                state.due = Instant::now() + wait;
                let age = state.loaded.map(|(at, _)| at.elapsed().as_secs());
                tracing::warn!(
                    issuer = %self.provider.issuer,
                    error = %e,
                    keys_age_s = ?age,
                    retry_in = ?wait,
                    "identity provider keys not fetched; the last good keys (if any) stay in force"
                );
                state.last_error = Some(e.to_string());
                Err(e)
            }
        };
        drop(state);
        self.finished.fetch_add(1, Ordering::Release);
        outcome
    }

    async fn download(
        &self,
        known: Option<String>,
    ) -> Result<(KeySet, String, Option<Duration>, Vec<String>), FetchError> {
        let uri = match known {
            Some(uri) => uri,
            None => self.discover().await?,
        };
        let fetched = self.fetcher.get(&uri).await?;
        let previous = self.current.load_full();
        let (set, skipped) = KeySet::published(
            &fetched.body,
            &self.provider.algorithms,
            &self.rules,
            previous.as_deref(),
        )
        .map_err(|e| FetchError::Invalid(format!("{uri}: {e}")))?;
        Ok((set, uri, fetched.max_age, skipped))
    }

    /// The `jwks_uri` of the issuer's discovery document.
    async fn discover(&self) -> Result<String, FetchError> {
        let issuer = &self.provider.issuer;
        // OpenID Connect Discovery §4: a terminating `/` is removed before appending.
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let fetched = self.fetcher.get(&url).await?;
        let document: Discovery = serde_json::from_slice(&fetched.body).map_err(|e| {
            FetchError::Invalid(format!(
                "{url}: not a discovery document (issuer, jwks_uri): {e}"
            ))
        })?;
        if document.issuer != *issuer {
            return Err(FetchError::Invalid(format!(
                "{url}: the document is for issuer {:?}, not {issuer:?} (they must be equal \
                 exactly, OpenID Connect Discovery §4.3)",
                document.issuer
            )));
        }
        if !document.jwks_uri.starts_with("https://") {
            return Err(FetchError::Invalid(format!(
                "{url}: jwks_uri {:?} is not https://",
                document.jwks_uri
            )));
        }
        Ok(document.jwks_uri)
    }

    /// Refreshes when due until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let due = self.state().due;
            if due > Instant::now() {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep_until(due.into()) => {}
                    () = self.rescheduled.notified() => {}
                }
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                _ = self.fetch() => {}
            }
        }
    }

    /// Where the keys stand.
    pub fn status(&self) -> ProviderStatus {
        let state = self.state();
        ProviderStatus {
            issuer: self.provider.issuer.clone(),
            keys: self.current.load().as_ref().map_or(0, |s| s.len()),
            age: state.loaded.map(|(_, wall)| {
                SystemTime::now()
                    .duration_since(wall)
                    .unwrap_or(Duration::ZERO)
            }),
            last_error: state.last_error.clone(),
            fetches: state.counts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_sets_the_period_within_bounds() {
        let s = JwksSettings::default();
        assert_eq!(s.period(None), Duration::from_secs(900));
        assert_eq!(
            s.period(Some(Duration::from_secs(3600))),
            Duration::from_secs(3600)
        );
        assert_eq!(s.period(Some(Duration::ZERO)), Duration::from_secs(60));
        assert_eq!(
            s.period(Some(Duration::from_secs(7 * 24 * 3600))),
            Duration::from_secs(24 * 3600)
        );
    }
}
