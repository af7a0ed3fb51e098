//! What an instance reports about its enforcement settings (`/readyz`, `/metrics`): where the
//! settings in force come from, and what the store's record looked like at the last read.

/// Where the settings in force come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsSource {
    /// None are known: checks are answered `settings_unavailable`.
    None,
    /// The local snapshot, not yet confirmed against the store.
    Snapshot,
    /// The store.
    Store,
}

impl SettingsSource {
    /// The name used in `/readyz` and `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            SettingsSource::None => "none",
            SettingsSource::Snapshot => "snapshot",
            SettingsSource::Store => "store",
        }
    }
}

/// What the store's settings record looked like at the last read, against what this instance
/// has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordState {
    /// Not read yet, or unreadable.
    Unknown = 0,
    /// Present, at or above the version in force.
    Ok = 1,
    /// Gone (a Redis restarted empty, `FLUSHALL`, a failover to an empty replica): being
    /// restored.
    Missing = 2,
    /// Below the version in force (a failover to a lagging replica): being restored.
    Behind = 3,
    /// At the version in force, with other settings: restored with this instance's.
    Diverged = 4,
}

impl RecordState {
    /// Every state, for metrics.
    pub const ALL: [RecordState; 5] = [
        RecordState::Unknown,
        RecordState::Ok,
        RecordState::Missing,
        RecordState::Behind,
        RecordState::Diverged,
    ];

    /// The name used in `/readyz` and `/metrics`.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordState::Unknown => "unknown",
            RecordState::Ok => "ok",
            RecordState::Missing => "missing",
            RecordState::Behind => "behind",
            RecordState::Diverged => "diverged",
        }
    }

    pub(super) fn from_u8(raw: u8) -> Self {
        Self::ALL
            .into_iter()
            .find(|s| *s as u8 == raw)
            .unwrap_or(RecordState::Unknown)
    }
}

/// What `/readyz` and `/metrics` report about the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingsStatus {
    /// Where the settings in force come from.
    pub source: SettingsSource,
    /// Their version (0 when none are known).
    pub version: u64,
    /// Whether they have been read from the store since start.
    pub loaded: bool,
    /// Whether they may be out of date (see [`Enforcement::may_be_stale`]).
    pub stale: bool,
    /// The store's record at the last read.
    pub record: RecordState,
    /// The version the store held when it was behind or diverged.
    pub record_version: Option<u64>,
    /// Records restored or initialised by this instance since start.
    pub restores: u64,
}
