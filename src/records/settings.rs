//! The enforcement settings record, how it resolves a mode, and its change history
//! (DESIGN §2 mode resolution, §3 Enforcement).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::decision::Mode;
use crate::timestamp::Timestamp;

/// The versioned enforcement settings shared by every instance through the store.
///
/// Version 0 means "nothing known" (never saved); the first record is version 1 and every
/// change bumps the version by exactly one, which is what makes a compare-and-set on it
/// race-free. A record restored after the store lost it jumps above every version seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnforcementSettings {
    /// The global mode.
    pub mode: Mode,
    /// Per-endpoint overrides of the global mode.
    #[serde(default)]
    pub endpoints: BTreeMap<String, Mode>,
    /// With ENFORCED, enforce only for users whose bucket (0-99) is below this; the others get
    /// LOG_ONLY. Absent: everyone.
    #[serde(default)]
    pub enforce_percent: Option<u8>,
    /// When on, every mode resolves to DISABLED.
    #[serde(default)]
    pub kill_switch: bool,
    /// Bumped by one on every change.
    pub version: u64,
    /// When the last change was made (absent before the first change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
    /// Who made the last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
}

impl EnforcementSettings {
    /// Settings with `mode` and nothing else, at version 0 (a fresh deployment's first record
    /// is these at version 1).
    pub fn initial(mode: Mode) -> Self {
        Self {
            mode,
            endpoints: BTreeMap::new(),
            enforce_percent: None,
            kill_switch: false,
            version: 0,
            updated_at: None,
            updated_by: None,
        }
    }

    /// Whether `other` holds the same policy (modes, percentage, kill switch), whatever its
    /// version and who made it.
    pub fn same_policy(&self, other: &Self) -> bool {
        self.mode == other.mode
            && self.endpoints == other.endpoints
            && self.enforce_percent == other.enforce_percent
            && self.kill_switch == other.kill_switch
    }

    /// The policy as JSON (for history entries that replace all of it).
    pub fn policy_json(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": self.mode,
            "endpoints": self.endpoints,
            "enforce_percent": self.enforce_percent,
            "kill_switch": self.kill_switch,
            "version": self.version,
        })
    }

    /// The mode that applies to `user` on `endpoint`: the kill switch beats everything, an
    /// endpoint override beats the global mode, and a partial rollout turns ENFORCED into
    /// LOG_ONLY for users whose bucket is at or above `enforce_percent`.
    pub fn mode_for(&self, endpoint: &str, user: &str) -> Mode {
        if self.kill_switch {
            return Mode::Disabled;
        }
        let mode = self.endpoints.get(endpoint).copied().unwrap_or(self.mode);
        match self.enforce_percent {
            Some(percent)
                if mode == Mode::Enforced && rollout_bucket(endpoint, user) >= percent =>
            {
                Mode::LogOnly
            }
            _ => mode,
        }
    }
}

/// The user's stable rollout bucket on `endpoint`, 0-99: `murmur3_32("{endpoint}:{user}",
/// seed 0) % 100`.
///
/// The same hash as Unleash's gradual rollout (which adds one to get 1-100), so a user's bucket
/// is the same on every instance and across restarts, and raising the percentage only ever adds
/// users. Grouping by endpoint spreads the first enforced users differently per endpoint.
pub fn rollout_bucket(endpoint: &str, user: &str) -> u8 {
    let key = format!("{endpoint}:{user}");
    let hash = murmur3::murmur3_32(&mut std::io::Cursor::new(key.as_bytes()), 0)
        .expect("hashing an in-memory buffer cannot fail");
    u8::try_from(hash % 100).expect("a value below 100 fits in u8")
}

/// What a history entry changed; written as `global`, `endpoint:{name}`, `kill_switch`,
/// `initialise` or `restore` (in the store, the API and the audit stream alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryChange {
    /// The global mode and the share of users enforced.
    Global,
    /// One endpoint's override.
    Endpoint(String),
    /// The kill switch.
    KillSwitch,
    /// A fresh store's first record, written by an instance.
    Initialise,
    /// The record written back by an instance after the store lost it.
    Restore,
}

impl std::fmt::Display for HistoryChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Global => f.write_str("global"),
            Self::Endpoint(name) => write!(f, "endpoint:{name}"),
            Self::KillSwitch => f.write_str("kill_switch"),
            Self::Initialise => f.write_str("initialise"),
            Self::Restore => f.write_str("restore"),
        }
    }
}

impl std::str::FromStr for HistoryChange {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        match raw {
            "global" => Ok(Self::Global),
            "kill_switch" => Ok(Self::KillSwitch),
            "initialise" => Ok(Self::Initialise),
            "restore" => Ok(Self::Restore),
            _ => raw
                .strip_prefix("endpoint:")
                .map(|name| Self::Endpoint(name.to_owned()))
                .ok_or_else(|| format!("unknown history change {raw:?}")),
        }
    }
}

impl Serialize for HistoryChange {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HistoryChange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// One change in the history: what changed, from what, to what, by whom and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    /// The settings version this change produced.
    pub version: u64,
    /// When it was made.
    pub at: Timestamp,
    /// The principal that made it.
    pub actor: String,
    /// What changed: `global` (mode and enforce_percent), `endpoint:{name}`, `kill_switch`,
    /// `initialise` (a fresh store's first record, by `instance:{name}`) or `restore` (the
    /// record written back after the store lost it, by `instance:{name}`).
    #[schema(value_type = String)]
    pub change: HistoryChange,
    /// The value before: for `global`, `{mode, enforce_percent}`; for `endpoint:{name}`, the
    /// endpoint's mode (null: none); for `kill_switch`, a boolean; for `initialise` and
    /// `restore`, the whole policy `{mode, endpoints, enforce_percent, kill_switch, version}`
    /// (null: none).
    #[schema(schema_with = history_value)]
    pub from: serde_json::Value,
    /// The value after (as `from`).
    #[schema(schema_with = history_value)]
    pub to: serde_json::Value,
    /// The reason the actor gave.
    pub reason: String,
}

/// The schema of a history entry's `from` and `to`: one of the shapes [`HistoryEntry::from`]
/// lists (what `Change::apply` and the reconciler record).
fn history_value() -> utoipa::openapi::schema::Schema {
    let mode = serde_json::json!({ "$ref": "#/components/schemas/Mode" });
    let percent = serde_json::json!({ "type": ["integer", "null"], "minimum": 0, "maximum": 100 });
    serde_json::from_value(serde_json::json!({ "anyOf": [
        { "type": "null" },
        { "type": "boolean" },
        mode,
        {
            "type": "object",
            "required": ["mode", "enforce_percent"],
            "properties": { "mode": mode, "enforce_percent": percent },
            "additionalProperties": false,
        },
        {
            "type": "object",
            "required": ["mode", "endpoints", "enforce_percent", "kill_switch", "version"],
            "properties": {
                "mode": mode,
                "endpoints": { "type": "object", "additionalProperties": mode },
                "enforce_percent": percent,
                "kill_switch": { "type": "boolean" },
                "version": { "type": "integer", "minimum": 0 },
            },
            "additionalProperties": false,
        },
    ]}))
    .expect("a valid schema")
}

impl HistoryEntry {
    /// This change as an event of the audit stream, recorded by `instance`.
    pub fn audit_event(&self, instance: &str) -> crate::records::AuditEvent {
        crate::records::AuditEvent::change(
            self.at,
            self.change.to_string(),
            self.actor.clone(),
            instance,
            serde_json::json!({
                "version": self.version, "from": self.from, "to": self.to, "reason": self.reason,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mode: Mode) -> EnforcementSettings {
        EnforcementSettings::initial(mode)
    }

    #[test]
    fn endpoint_override_beats_global_and_kill_switch_beats_everything() {
        let mut s = settings(Mode::LogOnly);
        s.endpoints.insert("chat".into(), Mode::Enforced);
        assert_eq!(s.mode_for("chat", "u"), Mode::Enforced);
        assert_eq!(s.mode_for("other", "u"), Mode::LogOnly);
        s.kill_switch = true;
        assert_eq!(s.mode_for("chat", "u"), Mode::Disabled);
        assert_eq!(s.mode_for("other", "u"), Mode::Disabled);
    }

    #[test]
    fn buckets_are_murmur3_and_never_change_between_releases() {
        // The reference vector of MurmurHash3 x86_32: the crate computes the real thing.
        let hello = murmur3::murmur3_32(&mut std::io::Cursor::new(b"hello"), 0).unwrap();
        assert_eq!(hello, 0x248b_fa47);
        // Pinned: a change here would silently move users in or out of a partial rollout.
        assert_eq!(rollout_bucket("chat", "alice"), 65);
        assert_eq!(rollout_bucket("default", "bob"), 28);
    }

    #[test]
    fn partial_enforcement_is_close_to_the_share_and_only_grows() {
        let users: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        let mut s = settings(Mode::Enforced);
        let mut previous: Vec<bool> = vec![false; users.len()];
        for percent in [0u8, 1, 10, 25, 50, 90, 100] {
            s.enforce_percent = Some(percent);
            let enforced: Vec<bool> = users
                .iter()
                .map(|u| s.mode_for("chat", u) == Mode::Enforced)
                .collect();
            let share = enforced.iter().filter(|e| **e).count() as f64 / users.len() as f64;
            assert!(
                (share - f64::from(percent) / 100.0).abs() < 0.02,
                "{percent}%: got {share}"
            );
            for (before, now) in previous.iter().zip(&enforced) {
                assert!(!before || *now, "raising the percentage removed a user");
            }
            previous = enforced;
        }
        s.enforce_percent = Some(50);
        s.mode = Mode::LogOnly;
        assert!(users.iter().all(|u| s.mode_for("chat", u) == Mode::LogOnly));
    }

    #[test]
    fn old_records_without_the_new_fields_still_load() {
        let old = r#"{"mode":"ENFORCED","version":3}"#;
        let s: EnforcementSettings = serde_json::from_str(old).unwrap();
        assert_eq!(s.mode, Mode::Enforced);
        assert!(s.endpoints.is_empty() && !s.kill_switch && s.enforce_percent.is_none());
    }
}
