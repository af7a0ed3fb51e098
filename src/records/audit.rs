//! The audit event (DESIGN §6) and its stream encoding.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::decision::{Mode, Reason, Verdict};
use crate::timestamp::Timestamp;

/// What produced an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `POST /v1/validate` and its batch.
    Validate,
    /// `/v1/forward-auth`.
    ForwardAuth,
    /// The ownership middleware.
    Middleware,
    /// An admin change (settings, backfill).
    Admin,
}

impl Source {
    /// The name used on the wire and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Validate => "validate",
            Source::ForwardAuth => "forward_auth",
            Source::Middleware => "middleware",
            Source::Admin => "admin",
        }
    }
}

/// The decision an event records.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AuditDecision {
    /// Allowed although the rule could not be applied (`store_unavailable` outside ENFORCED).
    Allow,
    /// Denied.
    Deny,
    /// Would have been denied (LOG_ONLY).
    WouldDeny,
    /// An admin change; `reason` names what changed.
    Change,
}

impl From<Verdict> for AuditDecision {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Allow => AuditDecision::Allow,
            Verdict::Deny => AuditDecision::Deny,
            Verdict::WouldDeny => AuditDecision::WouldDeny,
        }
    }
}

impl AuditDecision {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditDecision::Allow => "allow",
            AuditDecision::Deny => "deny",
            AuditDecision::WouldDeny => "would_deny",
            AuditDecision::Change => "change",
        }
    }
}

impl FromStr for AuditDecision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(AuditDecision::Allow),
            "deny" => Ok(AuditDecision::Deny),
            "would_deny" => Ok(AuditDecision::WouldDeny),
            "change" => Ok(AuditDecision::Change),
            _ => Err(format!(
                "unknown decision {s:?}: use deny, would_deny, allow or change"
            )),
        }
    }
}

/// The stream fields of an event, in the order they are written.
const FIELDS: [&str; 15] = [
    "ts",
    "decision",
    "reason",
    "user",
    "session_id",
    "owner",
    "endpoint",
    "method",
    "path",
    "mode",
    "source",
    "request_id",
    "client_ip",
    "instance",
    "detail",
];

/// One audited decision or admin change. Never carries tokens or message content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    /// When it happened.
    pub ts: Timestamp,
    /// deny, would_deny, allow (store unavailable outside ENFORCED) or change.
    pub decision: AuditDecision,
    /// The decision's reason (`not_owner`, `no_owner`, `store_unavailable`, ...; for a
    /// forward-auth request refused before any decision, `ambiguous_request` or
    /// `refused_uri`) or, for a change, what changed (`global`, `endpoint:{name}`,
    /// `kill_switch`, ...).
    pub reason: String,
    /// The user checked, or the admin who made the change.
    pub user: String,
    /// The session checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The session's owner, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The endpoint whose mode applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The HTTP method of the request checked, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The path of the request checked (no query string), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The mode applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// What produced the event.
    pub source: Source,
    /// The request id (`x-request-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// The gatehouse instance that recorded it.
    pub instance: String,
    /// For changes: `{version?, from, to, reason}` and the like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

impl AuditEvent {
    /// A change made by `actor` (an admin, or `instance:{id}` for an instance's own), with
    /// nothing of a request set: the caller fills in `request_id` and `client_ip` when one is
    /// behind it.
    pub fn change(
        ts: Timestamp,
        what: String,
        actor: String,
        instance: &str,
        detail: Value,
    ) -> Self {
        Self {
            ts,
            decision: AuditDecision::Change,
            reason: what,
            user: actor,
            session_id: None,
            owner: None,
            endpoint: None,
            method: None,
            path: None,
            mode: None,
            source: Source::Admin,
            request_id: None,
            client_ip: None,
            instance: instance.to_owned(),
            detail: Some(detail),
        }
    }

    /// A decision event with the request-independent fields set; the caller fills in where
    /// the request came from.
    pub fn decision(
        verdict: Verdict,
        reason: Reason,
        mode: Mode,
        source: Source,
        instance: &str,
    ) -> Self {
        Self {
            ts: Timestamp::now(),
            decision: verdict.into(),
            reason: reason.as_str().to_owned(),
            user: String::new(),
            session_id: None,
            owner: None,
            endpoint: None,
            method: None,
            path: None,
            mode: Some(mode),
            source,
            request_id: None,
            client_ip: None,
            instance: instance.to_owned(),
            detail: None,
        }
    }

    /// The event as stream fields: one field per attribute (so `XRANGE` in redis-cli is
    /// readable), every attribute always present in the same order (absent ones empty, which
    /// lets Redis store the field names once per stream node), `detail` as JSON text.
    pub fn to_fields(&self) -> [(&'static str, String); FIELDS.len()] {
        let text = |value: &Option<String>| value.clone().unwrap_or_default();
        let values = [
            self.ts.to_string(),
            self.decision.as_str().to_owned(),
            self.reason.clone(),
            self.user.clone(),
            text(&self.session_id),
            text(&self.owner),
            text(&self.endpoint),
            text(&self.method),
            text(&self.path),
            self.mode.map(|m| m.as_str().to_owned()).unwrap_or_default(),
            self.source.as_str().to_owned(),
            text(&self.request_id),
            text(&self.client_ip),
            self.instance.clone(),
            self.detail
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        ];
        let mut values = values.into_iter();
        FIELDS.map(|key| (key, values.next().unwrap_or_default()))
    }

    /// Reads an event back from its stream fields.
    pub fn from_fields(fields: HashMap<String, String>) -> Result<Self, String> {
        let map: Map<String, Value> = fields
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(key, value)| {
                let value = if key == "detail" {
                    serde_json::from_str(&value).unwrap_or(Value::String(value))
                } else {
                    Value::String(value)
                };
                (key, value)
            })
            .collect();
        serde_json::from_value(Value::Object(map)).map_err(|e| e.to_string())
    }
}

/// A stream entry id, `{milliseconds}-{sequence}` as Redis writes them: the paging cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AuditId {
    /// Milliseconds since the Unix epoch.
    pub millis: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl fmt::Display for AuditId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.millis, self.seq)
    }
}

impl FromStr for AuditId {
    type Err = String;

    /// Reads the id as Redis writes it: two decimal numbers without leading zeros, each at most
    /// `u64::MAX` ([`AuditId::pattern`] says the same).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("{s:?} is not an audit entry id (e.g. 1732350000000-0)");
        let number = |digits: &str| {
            let canonical = digits.bytes().all(|b| b.is_ascii_digit())
                && (digits == "0" || !digits.starts_with('0'));
            canonical
                .then(|| digits.parse::<u64>().ok())
                .flatten()
                .ok_or_else(invalid)
        };
        let (millis, seq) = s.split_once('-').ok_or_else(invalid)?;
        Ok(Self {
            millis: number(millis)?,
            seq: number(seq)?,
        })
    }
}

impl AuditId {
    /// The pattern of an id as [`FromStr`] reads it, for the OpenAPI document.
    pub fn pattern() -> String {
        let number = decimal_at_most(u64::MAX);
        format!("^(?:{number})-(?:{number})$")
    }
}

/// A pattern of the decimal numbers from 0 to `max`, without leading zeros.
fn decimal_at_most(max: u64) -> String {
    let digits = max.to_string();
    let len = digits.len();
    let mut alternatives = vec!["0".to_owned()];
    if len > 1 {
        alternatives.push(format!("[1-9][0-9]{{0,{}}}", len - 2));
    }
    // As long as `max`: its first `i` digits, a smaller one, then any.
    for (i, digit) in digits.bytes().enumerate() {
        let lowest = if i == 0 { b'1' } else { b'0' };
        if digit > lowest {
            let rest = len - i - 1;
            alternatives.push(format!(
                "{}[{}-{}][0-9]{{{rest}}}",
                &digits[..i],
                lowest as char,
                (digit - 1) as char
            ));
        }
    }
    alternatives.push(digits);
    alternatives.join("|")
}

/// A stored event with its id.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AuditEntry {
    /// The stream entry id (pass it as `before` to page).
    #[schema(value_type = String, example = "1732350000000-0")]
    #[serde(serialize_with = "serialize_display")]
    pub id: AuditId,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
}

fn serialize_display<S: serde::Serializer>(id: &AuditId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

/// An event numbered by the writer that queued it: `(writer, seq)` is what makes writes
/// idempotent (see [`crate::store::AuditStore::append_audit`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sequenced {
    /// The writer's sequence number, from 1, increasing by one per event.
    pub seq: u64,
    /// The event.
    pub event: AuditEvent,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pattern_agrees(raw: &str) -> bool {
        static PATTERN: std::sync::LazyLock<regex::Regex> =
            std::sync::LazyLock::new(|| regex::Regex::new(&AuditId::pattern()).unwrap());
        PATTERN.is_match(raw) == raw.parse::<AuditId>().is_ok()
    }

    #[test]
    fn ids_are_read_as_redis_writes_them() {
        let max = format!("{}-{}", u64::MAX, u64::MAX);
        for raw in [
            "0-0",
            "1732350000000-0",
            "1-18446744073709551615",
            max.as_str(),
        ] {
            assert!(raw.parse::<AuditId>().is_ok(), "{raw}");
            assert!(pattern_agrees(raw), "{raw}");
        }
        for raw in [
            "",
            "-",
            "1-",
            "-1",
            "+1-0",
            "1-+0",
            "01-0",
            "1-00",
            " 1-0",
            "1-0-0",
            "1.0-0",
            "18446744073709551616-0",
            "99999999999999999999-0",
            "1-١",
        ] {
            assert!(raw.parse::<AuditId>().is_err(), "{raw}");
            assert!(pattern_agrees(raw), "{raw}");
        }
    }

    proptest! {
        #[test]
        fn the_id_pattern_is_what_parse_reads(
            raw in "[0-9+]{0,21}-[0-9]{0,21}|1844674407370955[0-9]{4}-0|[0-9-]{0,8}|.{0,12}"
        ) {
            prop_assert!(pattern_agrees(&raw), "{raw}");
        }
    }

    #[test]
    fn fields_round_trip() {
        let mut event = AuditEvent::decision(
            Verdict::WouldDeny,
            Reason::NotOwner,
            Mode::LogOnly,
            Source::Validate,
            "gh-1",
        );
        event.user = "bob".into();
        event.session_id = Some("s1".into());
        event.owner = Some("alice".into());
        event.detail = Some(serde_json::json!({ "from": 1, "to": [2] }));
        let fields = event.to_fields();
        assert!(
            fields
                .iter()
                .any(|(k, v)| *k == "decision" && v == "would_deny")
        );
        assert_eq!(fields.len(), FIELDS.len(), "every field, always");
        assert!(
            fields.iter().any(|(k, v)| *k == "method" && v.is_empty()),
            "absent: empty"
        );
        let back =
            AuditEvent::from_fields(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                .unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn fields_name_every_attribute() {
        let mut event = AuditEvent::decision(
            Verdict::Deny,
            Reason::NotOwner,
            Mode::Enforced,
            Source::Middleware,
            "gh-1",
        );
        for field in [
            &mut event.session_id,
            &mut event.owner,
            &mut event.endpoint,
            &mut event.method,
            &mut event.path,
            &mut event.request_id,
            &mut event.client_ip,
        ] {
            *field = Some("x".into());
        }
        event.detail = Some(serde_json::json!({}));
        let Value::Object(map) = serde_json::to_value(&event).unwrap() else {
            unreachable!()
        };
        let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
        let mut fields = FIELDS.to_vec();
        keys.sort_unstable();
        fields.sort_unstable();
        assert_eq!(keys, fields);
    }

    #[test]
    fn ids_parse_and_order() {
        let a: AuditId = "1732350000000-0".parse().unwrap();
        let b: AuditId = "1732350000000-11".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.to_string(), "1732350000000-11");
        for bad in ["", "1", "x-1", "1-", "-1", "1-2-3"] {
            assert!(bad.parse::<AuditId>().is_err(), "{bad}");
        }
    }
}
