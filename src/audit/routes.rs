//! `GET /v1/audit` (filtered, newest first, cursor paging) and `GET /v1/audit/summary`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{AuditDecision, AuditEntry, AuditId, Source};
use crate::http::{Admin, ApiError, AppState, PageLimit, Problem, Query};
use crate::store::{AuditStore, StoreError};
use crate::timestamp::Timestamp;

/// Entries read from the store per round trip.
const PAGE: usize = 500;
/// Entries examined at most by one `GET /v1/audit` call; past it the call returns what it
/// found and a cursor to continue from.
const MAX_SCAN: usize = 50_000;
/// Entries examined at most by one summary.
const MAX_SUMMARY_SCAN: usize = 2_000_000;
/// Users listed in a summary.
const TOP_USERS: usize = 10;

/// The audit routes.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_audit))
        .routes(routes!(get_summary))
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries at most (1-1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// Only entries older than this id (the `next_before` of the previous page).
    #[param(schema_with = audit_id_schema)]
    pub before: Option<String>,
    /// Only this decision: deny, would_deny, allow or change.
    #[param(value_type = Option<AuditDecision>)]
    pub decision: Option<String>,
    /// Only this user.
    pub user: Option<String>,
    /// Only this session (any spelling of it).
    #[param(value_type = Option<crate::session_id::SessionId>)]
    pub session_id: Option<String>,
    /// Only this endpoint.
    pub endpoint: Option<String>,
    /// Only this source: validate, forward_auth, middleware or admin.
    pub source: Option<Source>,
}

/// The schema of an audit entry id ([`AuditId`]'s `FromStr`).
fn audit_id_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(AuditId::pattern()))
        .examples(["1732350000000-0"])
        .build()
}

/// A page of audit entries.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Matching entries, newest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for the next page; absent when the stream has nothing older. A page
    /// may hold fewer than `limit` entries and still have a next one (each call examines at
    /// most 50,000 entries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

/// A filter over entries.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Only this decision.
    pub decision: Option<AuditDecision>,
    /// Only this user.
    pub user: Option<String>,
    /// Only this session.
    pub session_id: Option<String>,
    /// Only this endpoint.
    pub endpoint: Option<String>,
    /// Only this source.
    pub source: Option<Source>,
}

impl Filter {
    fn matches(&self, entry: &AuditEntry) -> bool {
        let e = &entry.event;
        self.decision.is_none_or(|d| d == e.decision)
            && self.user.as_ref().is_none_or(|u| *u == e.user)
            && self
                .session_id
                .as_ref()
                .is_none_or(|s| e.session_id.as_ref() == Some(s))
            && self
                .endpoint
                .as_ref()
                .is_none_or(|x| e.endpoint.as_ref() == Some(x))
            && self.source.is_none_or(|s| s == e.source)
    }
}

/// Matching entries older than `before`, newest first: at most `limit`, examining at most
/// `max_scan`. The cursor returned is the id of the last entry examined, so paging with it
/// never skips or repeats an entry.
pub async fn query(
    store: &dyn AuditStore,
    filter: &Filter,
    before: Option<AuditId>,
    limit: usize,
    max_scan: usize,
) -> Result<(Vec<AuditEntry>, Option<AuditId>), StoreError> {
    let mut entries = Vec::new();
    let mut cursor = before;
    let mut scanned = 0;
    loop {
        let page = store.audit_before(cursor, PAGE).await?;
        let full = page.len() == PAGE;
        for entry in page {
            scanned += 1;
            cursor = Some(entry.id);
            if filter.matches(&entry) {
                entries.push(entry);
                if entries.len() == limit {
                    return Ok((entries, cursor));
                }
            }
        }
        if !full {
            return Ok((entries, None));
        }
        if scanned >= max_scan {
            return Ok((entries, cursor));
        }
    }
}

/// Audit entries, newest first, filtered.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = [])))]
async fn get_audit(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = PageLimit::read(q.limit)?.get();
    let before = q
        .before
        .as_deref()
        .map(str::parse::<AuditId>)
        .transpose()
        .map_err(|why| ApiError::InvalidRequest(format!("before: {why}")))?;
    let decision = q
        .decision
        .as_deref()
        .map(str::parse::<AuditDecision>)
        .transpose()
        .map_err(|why| ApiError::InvalidRequest(format!("decision: {why}")))?;
    // Events hold the canonical spelling of an id: the filter is read the same way, so every
    // spelling of a session finds its events.
    let session_id = q
        .session_id
        .as_deref()
        .map(|raw| state.session_ids().parse(raw))
        .transpose()?
        .map(|id| id.as_str().to_owned());
    let filter = Filter {
        decision,
        user: q.user,
        session_id,
        endpoint: q.endpoint,
        source: q.source,
    };
    let (entries, next) = query(state.store.as_ref(), &filter, before, limit, MAX_SCAN).await?;
    Ok(Json(AuditPage {
        entries,
        next_before: next.map(|id| id.to_string()),
    }))
}

/// Query of `GET /v1/audit/summary`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SummaryQuery {
    /// Start of the window: an RFC 3339 time in UTC (`2026-11-23T10:00:00Z`, perhaps with a
    /// fraction of a second), or a window back from now: a whole number of `s`, `m`, `h`, `d`
    /// or `w` (default `24h`).
    #[param(schema_with = since_schema)]
    pub since: Option<String>,
}

/// Counts over a window of the stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Summary {
    /// Start of the window.
    pub since: Option<Timestamp>,
    /// End of the window (when the summary was made).
    pub until: Option<Timestamp>,
    /// Entries counted.
    pub total: u64,
    /// By decision (deny, would_deny, allow, change).
    #[schema(value_type = BTreeMap<String, u64>)]
    pub by_decision: BTreeMap<AuditDecision, u64>,
    /// By reason.
    // A decision's [`crate::decision::Reason`], a refusal's, or what a change changed (an
    // open set: `endpoint:{name}`), so keyed by its text.
    pub by_reason: BTreeMap<String, u64>,
    /// By endpoint (decisions only).
    pub by_endpoint: BTreeMap<String, u64>,
    /// The users with the most denied and would-deny decisions, most first (among the first
    /// 100,000 distinct users of the window).
    pub top_users: Vec<UserCount>,
    /// The sessions with the most denied and would-deny decisions, most first (among the first
    /// 100,000 distinct sessions of the window).
    pub top_sessions: Vec<SessionCount>,
    /// False when the window held more entries than one summary examines (2,000,000).
    pub complete: bool,
}

/// A session and its count.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionCount {
    /// The session.
    pub session_id: String,
    /// Deny and would-deny decisions.
    pub count: u64,
}

/// A user and their count.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserCount {
    /// The user.
    pub user: String,
    /// Deny and would-deny decisions.
    pub count: u64,
}

/// Parses `since`: an RFC 3339 time in UTC ([`Timestamp::parse_query`]) or a window back from
/// now ([`crate::timestamp::parse_window`]); [`since_schema`] is its published pattern.
pub fn parse_since(raw: &str) -> Result<Timestamp, String> {
    if let Some(at) = Timestamp::parse_query(raw) {
        return Ok(at);
    }
    let back: Duration = crate::timestamp::parse_window(raw).ok_or_else(|| {
        format!(
            "{raw:?}: write an RFC 3339 time in UTC (2026-11-23T10:00:00Z) or a window such as 24h"
        )
    })?;
    let millis = u64::try_from(back.as_millis()).unwrap_or(u64::MAX);
    Ok(Timestamp::from_unix_millis(
        Timestamp::now().unix_millis().saturating_sub(millis),
    ))
}

/// The schema of `since` ([`parse_since`]).
pub fn since_schema() -> utoipa::openapi::Object {
    use crate::timestamp::{QUERY_TIME_PATTERN, WINDOW_PATTERN};
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(format!("^(?:{QUERY_TIME_PATTERN}|{WINDOW_PATTERN})$")))
        .examples(["24h", "2026-11-23T10:00:00Z"])
        .build()
}

/// Distinct users (and sessions) a summary counts for its top lists: past this many, new
/// names are not tracked (counts of those already tracked go on). Names come from callers; the
/// bound keeps one summary's memory small whatever the stream holds.
const MAX_TRACKED: usize = 100_000;

/// Adds one to `name`'s count, tracking it only while fewer than [`MAX_TRACKED`] are.
fn tally_top(counts: &mut HashMap<String, u64>, name: &str) {
    if let Some(count) = counts.get_mut(name) {
        *count += 1;
    } else if counts.len() < MAX_TRACKED {
        counts.insert(name.to_owned(), 1);
    }
}

/// Counts the entries from `since` to now.
pub async fn summarize(store: &dyn AuditStore, since: Timestamp) -> Result<Summary, StoreError> {
    let until = Timestamp::now();
    let mut summary = Summary {
        since: Some(since),
        until: Some(until),
        complete: true,
        ..Summary::default()
    };
    let mut users: HashMap<String, u64> = HashMap::new();
    let mut sessions: HashMap<String, u64> = HashMap::new();
    let start = since.unix_millis();
    let mut cursor = (start > 0).then(|| AuditId {
        millis: start - 1,
        seq: u64::MAX,
    });
    let mut scanned = 0;
    'pages: loop {
        let page = store.audit_after(cursor, PAGE).await?;
        let full = page.len() == PAGE;
        for entry in page {
            if entry.id.millis > until.unix_millis() {
                break 'pages;
            }
            scanned += 1;
            cursor = Some(entry.id);
            let e = &entry.event;
            summary.total += 1;
            *summary.by_decision.entry(e.decision).or_default() += 1;
            *summary.by_reason.entry(e.reason.clone()).or_default() += 1;
            if e.decision != AuditDecision::Change {
                if let Some(endpoint) = &e.endpoint {
                    *summary.by_endpoint.entry(endpoint.clone()).or_default() += 1;
                }
                if matches!(e.decision, AuditDecision::Deny | AuditDecision::WouldDeny) {
                    tally_top(&mut users, &e.user);
                    if let Some(session) = &e.session_id {
                        tally_top(&mut sessions, session);
                    }
                }
            }
        }
        if !full {
            break;
        }
        if scanned >= MAX_SUMMARY_SCAN {
            summary.complete = false;
            break;
        }
    }
    let mut top: Vec<UserCount> = users
        .into_iter()
        .map(|(user, count)| UserCount { user, count })
        .collect();
    top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.user.cmp(&b.user)));
    top.truncate(TOP_USERS);
    summary.top_users = top;
    let mut top: Vec<SessionCount> = sessions
        .into_iter()
        .map(|(session_id, count)| SessionCount { session_id, count })
        .collect();
    top.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.session_id.cmp(&b.session_id))
    });
    top.truncate(TOP_USERS);
    summary.top_sessions = top;
    Ok(summary)
}

/// Counts by decision, reason, endpoint and top users since a point in time.
#[utoipa::path(get, path = "/v1/audit/summary", tag = "audit",
    params(SummaryQuery),
    responses(
        (status = 200, body = Summary),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 503, body = Problem),
    ),
    security(("bearer" = [])))]
async fn get_summary(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<SummaryQuery>,
) -> Result<Json<Summary>, ApiError> {
    let since = parse_since(q.since.as_deref().unwrap_or("24h"))
        .map_err(|why| ApiError::InvalidRequest(format!("since: {why}")))?;
    Ok(Json(summarize(state.store.as_ref(), since).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, Sequenced};
    use crate::decision::{Mode, Reason, Verdict};
    use crate::store::MemoryStore;

    #[tokio::test]
    async fn a_scan_cap_returns_a_cursor_that_neither_skips_nor_repeats() {
        let store = MemoryStore::default();
        let events: Vec<Sequenced> = (1..=2_000)
            .map(|seq| {
                let mut event = AuditEvent::decision(
                    Verdict::Deny,
                    Reason::NotOwner,
                    Mode::Enforced,
                    Source::Validate,
                    "t",
                );
                // One entry in seven is bob's.
                event.user = if seq % 7 == 0 { "bob" } else { "eve" }.into();
                event.session_id = Some(format!("s{seq}"));
                Sequenced { seq, event }
            })
            .collect();
        store.append_audit("w", &events).await.unwrap();
        let filter = Filter {
            user: Some("bob".into()),
            ..Filter::default()
        };
        let mut seen = Vec::new();
        let mut before = None;
        let mut calls = 0;
        loop {
            calls += 1;
            // At most 600 entries examined per call (two store pages of 500), 50 results.
            let (page, next) = query(&store, &filter, before, 50, 600).await.unwrap();
            seen.extend(page.into_iter().map(|e| e.event.session_id.unwrap()));
            match next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        let expected: Vec<String> = (1..=2_000)
            .rev()
            .filter(|i| i % 7 == 0)
            .map(|i| format!("s{i}"))
            .collect();
        assert_eq!(seen, expected);
        assert!(calls >= 4, "the cap was hit: {calls} calls");
    }

    #[test]
    fn since_is_a_time_or_a_duration_back() {
        let at = parse_since("2026-11-23T10:00:00Z").unwrap();
        assert_eq!(at.to_string(), "2026-11-23T10:00:00.000Z");
        let back = parse_since("1h").unwrap();
        let expected = Timestamp::now().unix_millis() - 3_600_000;
        assert!(back.unix_millis().abs_diff(expected) < 5_000);
        assert!(parse_since("soon").is_err());
    }
}
