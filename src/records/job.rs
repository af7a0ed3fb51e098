//! A backfill job's record, as the store keeps it (`{prefix}backfill:{job_id}`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::timestamp::Timestamp;

/// A file that could not be read as a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileError {
    /// The file (or directory).
    pub path: String,
    /// Why.
    pub error: String,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Working.
    Running,
    /// Stopped mid-way (its process went away); resume it.
    Interrupted,
    /// Done.
    Completed,
    /// Stopped on an error; resume it.
    Failed,
    /// Done, then rolled back.
    RolledBack,
}

impl JobState {
    /// The name used on the wire (`rolled_back`), for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Interrupted => "interrupted",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::RolledBack => "rolled_back",
        }
    }
}

/// Counts of a job.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Counts {
    /// Files read from the sources.
    pub files: u64,
    /// Unique valid session ids found (files and explicit list).
    pub found: u64,
    /// Sessions processed so far.
    pub processed: u64,
    /// Sessions this job made the default owner's (real runs).
    pub assigned: u64,
    /// Sessions that had an owner already (left as they were).
    pub skipped_owned: u64,
    /// Sessions a real run would assign (dry runs).
    pub would_assign: u64,
    /// Unreadable files and invalid ids.
    pub errors: u64,
}

/// The result of a rollback.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Rollback {
    /// When.
    pub at: Option<Timestamp>,
    /// Who.
    pub actor: String,
    /// Sessions released.
    pub released: u64,
    /// Sessions left alone because their owner changed since the job.
    pub kept: u64,
    /// Some of those (up to 100).
    pub kept_sample: Vec<String>,
}

/// A backfill job's record.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// The job id.
    pub job_id: String,
    /// Where it stands.
    pub state: JobState,
    /// Whether it only counts.
    pub dry_run: bool,
    /// The owner given to unowned sessions.
    pub default_owner: String,
    /// The sources (as resolved).
    pub sources: Vec<String>,
    /// How many ids were given explicitly.
    pub explicit_ids: u64,
    /// Who started it.
    pub actor: String,
    /// When it started.
    pub created_at: Timestamp,
    /// When its record last moved.
    pub updated_at: Timestamp,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Counts so far.
    pub counts: Counts,
    /// The first 1,000 errors (`counts.errors` has them all).
    pub errors: Vec<FileError>,
    /// Set once rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_the_wire_names() {
        for state in [
            JobState::Running,
            JobState::Interrupted,
            JobState::Completed,
            JobState::Failed,
            JobState::RolledBack,
        ] {
            assert_eq!(serde_json::json!(state), state.as_str());
        }
    }
}

/// The outcome of the latest `GET /v1/backfill/verify`, kept for the rollout report and the
/// dashboard (the full report, with its per-user counts and samples, is the call's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VerifySummary {
    /// When it ran.
    pub at: Timestamp,
    /// Who ran it.
    pub by: String,
    /// The directories it read.
    pub sources: Vec<String>,
    /// Unique session ids in the sources.
    pub expected: u64,
    /// Of those, how many have an owner.
    pub owned: u64,
    /// Of those, how many have none.
    pub missing: u64,
    /// Sessions with an owner that are not in the sources.
    pub extra: u64,
    /// Owned expected sessions missing from their owner's index.
    pub unindexed: u64,
    /// Unreadable files and invalid ids met.
    pub errors: u64,
    /// Every expected session has an owner.
    pub complete: bool,
}
