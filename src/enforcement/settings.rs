//! The enforcement settings record and its change history (DESIGN §3 Enforcement).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::decision::Mode;
use crate::timestamp::Timestamp;

/// The versioned enforcement settings shared by every instance through the store.
///
/// Version 0 is the built-in starting point (never saved); every saved change bumps the
/// version by exactly one, which is what makes a compare-and-set on it race-free.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnforcementSettings {
    /// The global mode.
    pub mode: Mode,
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
    /// The settings an empty store starts from.
    pub fn initial(mode: Mode) -> Self {
        Self {
            mode,
            version: 0,
            updated_at: None,
            updated_by: None,
        }
    }

    /// The mode that applies to `endpoint`.
    pub fn mode_for(&self, _endpoint: &str) -> Mode {
        self.mode
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
    /// What changed: `mode`.
    pub change: String,
    /// The value before.
    #[schema(value_type = Object)]
    pub from: serde_json::Value,
    /// The value after.
    #[schema(value_type = Object)]
    pub to: serde_json::Value,
    /// The reason the actor gave.
    pub reason: String,
}
