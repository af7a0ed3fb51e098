//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format.
//!
//! Each instance owns its [`Metrics`] (a `prometheus-client` registry, no global state), so
//! several instances in one process — the integration tests — keep separate counts.

mod families;
mod metered_store;
mod seconds;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use self::families::{
    AuthMetrics, CacheMetrics, EnforcementGauges, GrpcMetrics, HttpMetrics, JwksGauges,
    JwksMetrics, StoreMetrics,
};
pub use self::metered_store::MeteredStore;

use crate::decision::{Reason, Verdict};
use crate::records::Source;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub(crate) type Labels<const N: usize> = [(&'static str, &'static str); N];

/// The metrics of one instance.
pub struct Metrics {
    registry: Registry,
    /// Audit writer counters.
    pub audit: AuditMetrics,
    /// Where the enforcement settings stand.
    pub settings: SettingsMetrics,
    /// HTTP requests by route template.
    pub http: HttpMetrics,
    /// gRPC calls by method and code.
    pub grpc: GrpcMetrics,
    /// Store calls by operation.
    pub store: StoreMetrics,
    /// The owner cache.
    pub cache: CacheMetrics,
    /// Refused credentials and admin 403s.
    pub auth: AuthMetrics,
    /// The identity providers' keys (set when scraped).
    pub jwks: JwksMetrics,
    /// The settings in force (set when scraped).
    pub enforcement: EnforcementGauges,
    /// Decisions the time series lost ([`crate::stats`]).
    pub stats_dropped: Counter,
    decision_duration: families::SecondsFamily<1>,
    /// The histograms of `decision_duration`, one per source, resolved once.
    decision_histograms: [OnceLock<seconds::Seconds>; SOURCES],
    decisions: Family<Labels<3>, Counter>,
    /// The counters of `decisions`, resolved once per label set: a check then increments an
    /// atomic instead of hashing three labels under the family's lock.
    decision_counters: [OnceLock<Counter>; DECISION_SLOTS],
}

const VERDICTS: usize = 3;
const REASONS: usize = 7;
const SOURCES: usize = 4;
const DECISION_SLOTS: usize = VERDICTS * REASONS * SOURCES;

/// Counters of the audit writer: `gatehouse_audit_events_total{outcome}` and the backlog.
#[derive(Clone, Default)]
pub struct AuditMetrics {
    events: Family<Labels<1>, Counter>,
    backlog: Gauge,
}

/// The audit writer's counts, for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditCounts {
    /// Accepted from the request path.
    pub queued: u64,
    /// Appended to the stream from memory.
    pub written: u64,
    /// Written to the local spool file (Redis unreachable, memory queue full or shutting down).
    pub spooled: u64,
    /// Appended to the stream from the spool file.
    pub replayed: u64,
    /// Lost: the queue and the spool were both full or unavailable.
    pub dropped: u64,
}

const OUTCOMES: [&str; 5] = ["queued", "written", "spooled", "replayed", "dropped"];

impl AuditMetrics {
    fn add(&self, outcome: &'static str, n: usize) {
        self.events
            .get_or_create(&[("outcome", outcome)])
            .inc_by(n as u64);
    }

    /// Events accepted from the request path.
    pub fn queued(&self, n: usize) {
        self.add("queued", n);
    }

    /// Events appended from memory.
    pub fn written(&self, n: usize) {
        self.add("written", n);
    }

    /// Events moved to the spool file.
    pub fn spooled(&self, n: usize) {
        self.add("spooled", n);
    }

    /// Events appended from the spool file.
    pub fn replayed(&self, n: usize) {
        self.add("replayed", n);
    }

    /// Events lost.
    pub fn dropped(&self, n: usize) {
        self.add("dropped", n);
    }

    /// Events waiting (in memory and in the spool file).
    pub fn set_backlog(&self, n: usize) {
        self.backlog.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The counts so far.
    pub fn counts(&self) -> AuditCounts {
        let get = |outcome: &'static str| self.events.get_or_create(&[("outcome", outcome)]).get();
        AuditCounts {
            queued: get("queued"),
            written: get("written"),
            spooled: get("spooled"),
            replayed: get("replayed"),
            dropped: get("dropped"),
        }
    }
}

/// Gauges of the enforcement settings, set from their status when `/metrics` is scraped:
/// `gatehouse_settings_version`, `_stale` (0/1), `_source{source}` and `_record{state}` (one
/// of each set at 1), `_restores` (records restored or initialised by this instance).
#[derive(Clone, Default)]
pub struct SettingsMetrics {
    version: Gauge,
    stale: Gauge,
    source: Family<Labels<1>, Gauge>,
    record: Family<Labels<1>, Gauge>,
    restores: Gauge,
}

/// The values [`SettingsMetrics::observe`] sets.
#[derive(Debug, Clone, Copy)]
pub struct SettingsGauges {
    /// The version in force (0: none known).
    pub version: u64,
    /// Whether the settings may be out of date.
    pub stale: bool,
    /// `none`, `snapshot` or `store`.
    pub source: &'static str,
    /// `unknown`, `ok`, `missing`, `behind` or `diverged`.
    pub record: &'static str,
    /// Records restored or initialised by this instance.
    pub restores: u64,
}

const SETTINGS_SOURCES: [&str; 3] = ["none", "snapshot", "store"];
const RECORD_STATES: [&str; 5] = ["unknown", "ok", "missing", "behind", "diverged"];

impl SettingsMetrics {
    /// Sets every gauge.
    pub fn observe(&self, now: &SettingsGauges) {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.version.set(count(now.version));
        self.stale.set(i64::from(now.stale));
        self.restores.set(count(now.restores));
        for source in SETTINGS_SOURCES {
            let on = i64::from(source == now.source);
            self.source.get_or_create(&[("source", source)]).set(on);
        }
        for state in RECORD_STATES {
            let on = i64::from(state == now.record);
            self.record.get_or_create(&[("state", state)]).set(on);
        }
    }
}

impl Metrics {
    /// A registry with every gatehouse metric registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("gatehouse");
        let audit = AuditMetrics::default();
        for outcome in OUTCOMES {
            // Present from the start at 0, so a dashboard can alert on `dropped > 0`.
            let _ = audit.events.get_or_create(&[("outcome", outcome)]);
        }
        registry.register(
            "audit_events",
            "Audit events by outcome: queued, written, spooled, replayed, dropped",
            audit.events.clone(),
        );
        registry.register(
            "audit_backlog",
            "Audit events waiting in memory or in the spool file",
            audit.backlog.clone(),
        );
        let settings = SettingsMetrics::default();
        settings.observe(&SettingsGauges {
            version: 0,
            stale: true,
            source: "none",
            record: "unknown",
            restores: 0,
        });
        registry.register(
            "settings_version",
            "Version of the enforcement settings in force (0: none known, checks denied)",
            settings.version.clone(),
        );
        registry.register(
            "settings_stale",
            "1 when the settings in force may be out of date (snapshot, or not confirmed)",
            settings.stale.clone(),
        );
        registry.register(
            "settings_source",
            "Where the settings in force come from (none, snapshot, store): 1 for the current one",
            settings.source.clone(),
        );
        registry.register(
            "settings_record",
            "The store's settings record at the last read (unknown, ok, missing, behind, diverged): 1 for the current one",
            settings.record.clone(),
        );
        registry.register(
            "settings_restores",
            "Settings records restored or initialised by this instance since start",
            settings.restores.clone(),
        );
        let decisions = Family::<Labels<3>, Counter>::default();
        registry.register(
            "decisions",
            "Ownership decisions by decision, reason and source",
            decisions.clone(),
        );
        let stats_dropped = Counter::default();
        registry.register(
            "decision_stats_dropped",
            "Decisions left out of the time series (GET /v1/stats/decisions): the store unreachable for longer than the backlog holds, or unsent at shutdown",
            stats_dropped.clone(),
        );
        let families = families::Families::register(&mut registry);
        Arc::new(Self {
            stats_dropped,
            registry,
            audit,
            settings,
            http: families.http,
            grpc: families.grpc,
            store: families.store,
            cache: families.cache,
            auth: families.auth,
            jwks: families.jwks,
            enforcement: families.enforcement,
            decision_duration: families.decision_duration,
            decision_histograms: std::array::from_fn(|_| OnceLock::new()),
            decisions,
            decision_counters: std::array::from_fn(|_| OnceLock::new()),
        })
    }

    /// Counts one decision.
    pub fn decision(&self, verdict: Verdict, reason: Reason, source: Source) {
        let slot = (verdict as usize * REASONS + reason as usize) * SOURCES + source as usize;
        let counter = || {
            self.decisions.get_or_create_owned(&[
                ("decision", verdict.as_str()),
                ("reason", reason.as_str()),
                ("source", source.as_str()),
            ])
        };
        match self.decision_counters.get(slot) {
            Some(memo) => memo.get_or_init(counter).inc(),
            // Unreachable while the constants match the enums (a test checks they do).
            None => counter().inc(),
        };
    }

    /// How long deciding one check from `source` took.
    pub fn decided_in(&self, source: Source, took: Duration) {
        let histogram = || {
            self.decision_duration
                .get_or_create_owned(&[("source", source.as_str())])
        };
        match self.decision_histograms.get(source as usize) {
            Some(memo) => memo.get_or_init(histogram).observe(took),
            None => histogram().observe(took),
        }
    }

    /// The Prometheus text exposition (format 0.0.4), for scrapers that do not ask for
    /// OpenMetrics (`promtool check metrics`, curl): the same samples; a counter's `# HELP`
    /// and `# TYPE` name its `_total` samples, and `# UNIT` and `# EOF` (OpenMetrics only)
    /// are left out.
    pub fn render_text(&self) -> String {
        to_text_format(&self.render())
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

/// OpenMetrics text to the Prometheus text format (see [`Metrics::render_text`]).
fn to_text_format(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        // HELP comes before TYPE: held until the type says whether the name gets `_total`.
        if line.starts_with("# HELP ") {
            help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            if let Some(help) = help.take() {
                let text = help.splitn(4, ' ').nth(3).unwrap_or("");
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_counters_by_their_samples() {
        let metrics = Metrics::new();
        metrics.decision(Verdict::Deny, Reason::NotOwner, Source::Validate);
        metrics
            .http
            .answered("/v1/validate", "POST", 200, Duration::from_millis(1));
        let text = metrics.render_text();
        assert!(
            text.contains("# HELP gatehouse_decisions_total Ownership decisions"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE gatehouse_decisions_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE gatehouse_settings_version gauge"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE gatehouse_http_request_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    #[test]
    fn renders_audit_counters_from_zero() {
        let metrics = Metrics::new();
        metrics.audit.queued(3);
        metrics.audit.dropped(0);
        metrics.decision(Verdict::Deny, Reason::NotOwner, Source::Validate);
        metrics.decision(Verdict::Deny, Reason::NotOwner, Source::Validate);
        let text = metrics.render();
        assert!(
            text.contains("gatehouse_audit_events_total{outcome=\"queued\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("gatehouse_audit_events_total{outcome=\"dropped\"} 0"),
            "{text}"
        );
        assert!(text.contains("gatehouse_decisions_total{decision=\"deny\",reason=\"not_owner\",source=\"validate\"} 2"), "{text}");
        assert_eq!(metrics.audit.counts().queued, 3);
    }

    /// Every label set has its own memo slot: adding a variant breaks this match (and the
    /// constants must grow with it).
    #[test]
    fn every_label_set_has_its_own_slot() {
        fn all_reasons(r: Reason) -> usize {
            match r {
                Reason::EnforcementDisabled
                | Reason::Admin
                | Reason::Owner
                | Reason::NoOwner
                | Reason::NotOwner
                | Reason::StoreUnavailable
                | Reason::SettingsUnavailable => r as usize,
            }
        }
        let verdicts = [Verdict::Allow, Verdict::Deny, Verdict::WouldDeny];
        let reasons = [
            Reason::EnforcementDisabled,
            Reason::Admin,
            Reason::Owner,
            Reason::NoOwner,
            Reason::NotOwner,
            Reason::StoreUnavailable,
            Reason::SettingsUnavailable,
        ];
        let sources = [
            Source::Validate,
            Source::ForwardAuth,
            Source::Middleware,
            Source::Admin,
        ];
        assert_eq!(
            (verdicts.len(), reasons.len(), sources.len()),
            (VERDICTS, REASONS, SOURCES)
        );
        let metrics = Metrics::new();
        for (i, v) in verdicts.into_iter().enumerate() {
            for r in reasons {
                for s in sources {
                    metrics.decision(v, r, s);
                    if i == 0 {
                        metrics.decision(v, r, s);
                    }
                    assert!(all_reasons(r) < REASONS);
                }
            }
        }
        let text = metrics.render();
        let lines: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with("gatehouse_decisions_total{"))
            .collect();
        assert_eq!(lines.len(), DECISION_SLOTS, "{text}");
        let twice = lines.iter().filter(|l| l.ends_with(" 2")).count();
        assert_eq!(twice, REASONS * SOURCES, "{text}");
        assert!(lines.iter().all(|l| l.ends_with(" 1") || l.ends_with(" 2")));
    }
}
