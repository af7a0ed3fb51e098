//! The metric families beside the decision and audit counters: HTTP requests, decision and
//! store-call latency, the owner cache, authentication failures, the identity providers'
//! keys, the enforcement settings in force, and the build. Names and units follow Prometheus conventions (`_seconds`, `_total`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::Labels;
use super::seconds::Seconds;

pub(super) type SecondsFamily<const N: usize> = Family<Labels<N>, Seconds>;
type OwnedSeconds = Family<Vec<(&'static str, String)>, Seconds>;

fn seconds_family<const N: usize>() -> SecondsFamily<N> {
    Family::default()
}

/// Tells apart the metric sets of several instances in one process (the tests), for the
/// per-thread handle caches below.
static NEXT_SET: AtomicUsize = AtomicUsize::new(0);

/// The per-thread caches below hash with foldhash: their keys are a few integers.
type Fast = foldhash::fast::RandomState;

thread_local! {
    /// Per thread: the counter and histogram of each (set, route, method, status) seen, so a
    /// request neither builds its labels nor takes the family's lock (measured: the labels
    /// built per request cost throughput).
    static HTTP_HANDLES: RefCell<HashMap<HttpKey, HttpHandles, Fast>> =
        RefCell::new(HashMap::default());
    /// Per thread: each (set, operation)'s histogram.
    static STORE_HANDLES: RefCell<HashMap<(usize, &'static str), Seconds, Fast>> =
        RefCell::new(HashMap::default());
}

/// An HTTP request's label set: (metric set, route template's address, method, status).
type HttpKey = (usize, usize, &'static str, u16);

/// What [`HTTP_HANDLES`] holds per label set.
struct HttpHandles {
    /// The route template, compared on every hit: the address alone could be a freed
    /// template's, reused.
    route: Box<str>,
    requests: Counter,
    duration: Seconds,
}

/// `gatehouse_http_requests_total{route,method,status}` and
/// `gatehouse_http_request_duration_seconds{route,method}` (route: the template, e.g.
/// `/v1/sessions/{session_id}`, never the path a client sent).
#[derive(Clone)]
pub struct HttpMetrics {
    set: usize,
    requests: Family<Vec<(&'static str, String)>, Counter>,
    duration: OwnedSeconds,
}

impl HttpMetrics {
    /// Counts one answered request. `route` is the template (axum's `MatchedPath`, one
    /// allocation per route, so its address tells routes apart cheaply) or `unmatched`.
    pub fn answered(&self, route: &str, method: &'static str, status: u16, took: Duration) {
        HTTP_HANDLES.with_borrow_mut(|handles| {
            let key = (self.set, route.as_ptr() as usize, method, status);
            if handles.get(&key).is_none_or(|found| *found.route != *route) {
                handles.insert(key, self.handles(route, method, status));
            }
            if let Some(found) = handles.get(&key) {
                found.requests.inc();
                found.duration.observe(took);
            }
        });
    }

    fn handles(&self, route: &str, method: &'static str, status: u16) -> HttpHandles {
        let requests = self.requests.get_or_create_owned(&vec![
            ("route", route.to_owned()),
            ("method", method.to_owned()),
            ("status", status.to_string()),
        ]);
        let duration = self.duration.get_or_create_owned(&vec![
            ("route", route.to_owned()),
            ("method", method.to_owned()),
        ]);
        HttpHandles {
            route: route.into(),
            requests,
            duration,
        }
    }
}

/// `gatehouse_grpc_requests_total{method,code}` and
/// `gatehouse_grpc_request_duration_seconds{method}`: the gRPC calls of
/// `GATEHOUSE_GRPC_LISTEN` (method: `Check`; code: the `CheckResponse`'s status,
/// `PERMISSION_DENIED`, or the call's own when it failed, both by their canonical names).
#[derive(Clone, Default)]
pub struct GrpcMetrics {
    requests: Family<Labels<2>, Counter>,
    duration: SecondsFamily<1>,
}

impl GrpcMetrics {
    /// Counts one answered call. Both label sets are small and fixed: no per-call cache.
    pub fn answered(&self, method: &'static str, code: &'static str, took: Duration) {
        self.requests
            .get_or_create(&[("method", method), ("code", code)])
            .inc();
        self.duration
            .get_or_create(&[("method", method)])
            .observe(took);
    }
}

/// `gatehouse_store_call_duration_seconds{operation}` and
/// `gatehouse_store_errors_total{operation,kind}`.
#[derive(Clone)]
pub struct StoreMetrics {
    set: usize,
    duration: SecondsFamily<1>,
    errors: Family<Labels<2>, Counter>,
}

impl StoreMetrics {
    /// Counts one store call.
    pub fn call(&self, operation: &'static str, took: Duration, error: Option<&'static str>) {
        STORE_HANDLES.with_borrow_mut(|handles| {
            handles
                .entry((self.set, operation))
                .or_insert_with(|| {
                    self.duration
                        .get_or_create_owned(&[("operation", operation)])
                })
                .observe(took);
        });
        if let Some(kind) = error {
            self.errors
                .get_or_create(&[("operation", operation), ("kind", kind)])
                .inc();
        }
    }
}

/// `gatehouse_owner_cache_{hits,misses}_total` and `gatehouse_owner_cache_entries`, brought
/// up to the cache's own counts when scraped (the cache counts with one atomic per lookup).
#[derive(Clone, Default)]
pub struct CacheMetrics {
    hits: Counter,
    misses: Counter,
    entries: Gauge,
    /// Two scrapes at once must not both add the same difference.
    observing: std::sync::Arc<std::sync::Mutex<()>>,
}

impl CacheMetrics {
    /// Sets the counters to the cache's totals (they only grow) and the entries held.
    pub fn observe(&self, hits: u64, misses: u64, entries: u64) {
        let _one = self
            .observing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.hits.inc_by(hits.saturating_sub(self.hits.get()));
        self.misses.inc_by(misses.saturating_sub(self.misses.get()));
        self.entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
    }
}

/// `gatehouse_auth_failures_total{reason}` and `gatehouse_admin_forbidden_total`.
#[derive(Clone, Default)]
pub struct AuthMetrics {
    failures: Family<Labels<1>, Counter>,
    forbidden: Counter,
}

impl AuthMetrics {
    /// A request whose credentials were refused, by reason (`missing`, `expired`, ...).
    pub fn failed(&self, reason: &'static str) {
        self.failures.get_or_create(&[("reason", reason)]).inc();
    }

    /// An authenticated request refused by the admin API (403: not an admin).
    pub fn forbidden(&self) {
        self.forbidden.inc();
    }
}

/// The enforcement settings in force, set when scraped: `gatehouse_enforcement_mode{endpoint,
/// mode}` (1 for each endpoint's mode, `endpoint="*"` the global one),
/// `gatehouse_kill_switch` (0/1) and `gatehouse_enforce_percent`.
#[derive(Clone, Default)]
pub struct EnforcementGauges {
    mode: Family<Vec<(&'static str, String)>, Gauge>,
    kill_switch: Gauge,
    percent: Gauge,
}

/// The modes, as the API names them.
const MODES: [&str; 3] = ["DISABLED", "LOG_ONLY", "ENFORCED"];

impl EnforcementGauges {
    /// Sets the gauges from the settings in force: `modes` is (endpoint, mode) with `*` for
    /// the global mode; no settings known: every mode 0 and the kill switch 0.
    pub fn observe(&self, modes: &[(String, &'static str)], kill_switch: bool, percent: u8) {
        self.mode.clear();
        for (endpoint, mode) in modes {
            for candidate in MODES {
                self.mode
                    .get_or_create(&vec![
                        ("endpoint", endpoint.clone()),
                        ("mode", candidate.to_owned()),
                    ])
                    .set(i64::from(candidate == *mode));
            }
        }
        self.kill_switch.set(i64::from(kill_switch));
        self.percent.set(i64::from(percent));
    }
}

type ByIssuer = Vec<(&'static str, String)>;

/// The identity providers' keys, set from their status when scraped:
/// `gatehouse_jwks_keys{issuer}` (0: never loaded), `gatehouse_jwks_age_seconds{issuer}`
/// (since the keys in force were fetched; absent until they are),
/// `gatehouse_jwks_last_fetch_failed{issuer}` (0/1: the last good keys are in force) and
/// `gatehouse_jwks_fetches_total{issuer,outcome}` (`ok`, `error`: no answer or not a 200,
/// `invalid`: an answer that could not be taken).
#[derive(Clone, Default)]
pub struct JwksMetrics {
    keys: Family<ByIssuer, Gauge>,
    age: Family<ByIssuer, Gauge<f64, std::sync::atomic::AtomicU64>>,
    failed: Family<ByIssuer, Gauge>,
    fetches: Family<ByIssuer, Counter>,
    /// Two scrapes at once must not both add the same difference.
    observing: std::sync::Arc<std::sync::Mutex<()>>,
}

/// One identity provider's values for [`JwksMetrics::observe`].
#[derive(Debug, Clone)]
pub struct JwksGauges<'a> {
    /// The issuer (a configured URL: a bounded set of label values).
    pub issuer: &'a str,
    /// Keys in force.
    pub keys: usize,
    /// Their age; `None`: never loaded.
    pub age: Option<Duration>,
    /// Whether the last fetch failed.
    pub failed: bool,
    /// Fetches so far: ok, error, invalid.
    pub fetches: [u64; 3],
}

impl JwksMetrics {
    /// Sets the gauges, and the counters to the providers' totals (they only grow).
    pub fn observe(&self, providers: &[JwksGauges<'_>]) {
        let _one = self
            .observing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for p in providers {
            let issuer = vec![("issuer", p.issuer.to_owned())];
            self.keys
                .get_or_create(&issuer)
                .set(i64::try_from(p.keys).unwrap_or(i64::MAX));
            match p.age {
                Some(age) => {
                    self.age.get_or_create(&issuer).set(age.as_secs_f64());
                }
                None => {
                    self.age.remove(&issuer);
                }
            }
            self.failed.get_or_create(&issuer).set(i64::from(p.failed));
            for (outcome, total) in ["ok", "error", "invalid"].into_iter().zip(p.fetches) {
                let counter = self.fetches.get_or_create(&vec![
                    ("issuer", p.issuer.to_owned()),
                    ("outcome", outcome.to_owned()),
                ]);
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
    }
}

/// Everything registered here.
pub struct Families {
    pub http: HttpMetrics,
    pub grpc: GrpcMetrics,
    pub decision_duration: SecondsFamily<1>,
    pub store: StoreMetrics,
    pub cache: CacheMetrics,
    pub auth: AuthMetrics,
    pub jwks: JwksMetrics,
    pub enforcement: EnforcementGauges,
}

impl Families {
    /// The families, registered in `registry`, and `gatehouse_build_info{version}` = 1.
    pub fn register(registry: &mut Registry) -> Self {
        let set = NEXT_SET.fetch_add(1, Ordering::Relaxed);
        let http = HttpMetrics {
            set,
            requests: Family::default(),
            duration: Family::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            http.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by route template and method",
            Unit::Seconds,
            http.duration.clone(),
        );
        let grpc = GrpcMetrics::default();
        registry.register(
            "grpc_requests",
            "gRPC calls answered (GATEHOUSE_GRPC_LISTEN), by method and the status in the answer",
            grpc.requests.clone(),
        );
        registry.register_with_unit(
            "grpc_request_duration",
            "Time to answer a gRPC call, by method",
            Unit::Seconds,
            grpc.duration.clone(),
        );
        let decision_duration = seconds_family::<1>();
        registry.register_with_unit(
            "decision_duration",
            "Time to decide one check (settings, owner lookup, decision), by source",
            Unit::Seconds,
            decision_duration.clone(),
        );
        let store = StoreMetrics {
            set,
            duration: seconds_family::<1>(),
            errors: Family::default(),
        };
        registry.register_with_unit(
            "store_call_duration",
            "Time of one store call, by operation",
            Unit::Seconds,
            store.duration.clone(),
        );
        registry.register(
            "store_errors",
            "Failed store calls, by operation and kind (unavailable, outcome_unknown, corrupt, ...)",
            store.errors.clone(),
        );
        let cache = CacheMetrics::default();
        registry.register(
            "owner_cache_hits",
            "Owner lookups answered from the owner cache",
            cache.hits.clone(),
        );
        registry.register(
            "owner_cache_misses",
            "Owner lookups the owner cache sent to the store",
            cache.misses.clone(),
        );
        registry.register(
            "owner_cache_entries",
            "Entries in the owner cache",
            cache.entries.clone(),
        );
        let auth = AuthMetrics::default();
        registry.register(
            "auth_failures",
            "Requests whose credentials were refused, by reason (missing, malformed, expired, not_yet_valid, bad_signature, unknown_key, algorithm, issuer, audience, claims, keys_unavailable)",
            auth.failures.clone(),
        );
        registry.register(
            "admin_forbidden",
            "Authenticated requests the admin API refused (403: not an admin)",
            auth.forbidden.clone(),
        );
        let jwks = JwksMetrics::default();
        registry.register(
            "jwks_keys",
            "Keys in force per identity provider (0: never loaded: its tokens are refused)",
            jwks.keys.clone(),
        );
        registry.register_with_unit(
            "jwks_age",
            "Since the identity provider's keys in force were fetched (absent until they are)",
            Unit::Seconds,
            jwks.age.clone(),
        );
        registry.register(
            "jwks_last_fetch_failed",
            "1 when the last fetch of the identity provider's keys failed (the last good keys stay in force)",
            jwks.failed.clone(),
        );
        registry.register(
            "jwks_fetches",
            "Fetches of identity providers' keys, by issuer and outcome (ok, error, invalid)",
            jwks.fetches.clone(),
        );
        let enforcement = EnforcementGauges::default();
        registry.register(
            "enforcement_mode",
            "The mode in force per endpoint (endpoint=\"*\": the global mode): 1 for the current one",
            enforcement.mode.clone(),
        );
        registry.register(
            "kill_switch",
            "1 while the kill switch turns enforcement off",
            enforcement.kill_switch.clone(),
        );
        registry.register(
            "enforce_percent",
            "Share of users (0-100) ENFORCED applies to",
            enforcement.percent.clone(),
        );
        let build = Family::<Labels<1>, Gauge>::default();
        build
            .get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register(
            "build_info",
            "The running build: 1, labelled by version",
            build,
        );
        Self {
            http,
            grpc,
            decision_duration,
            store,
            cache,
            auth,
            jwks,
            enforcement,
        }
    }
}
