//! Redis key names (DESIGN §4), configurable so gatehouse can sit on an existing deployment.

/// Where each piece of state lives in Redis.
///
/// Owner and index keys keep the legacy names by default. Settings and history share the hash
/// tag `{enforcement}` so that the Lua script that updates both stays in one Redis Cluster slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySchema {
    /// Prefix of the owner keys: `chat_session_owner:` + session id → owner.
    pub owner_prefix: String,
    /// Prefix of the per-user index sets: `user_chat_sessions:` + user → set of session ids.
    pub user_sessions_prefix: String,
    /// Prefix of everything else gatehouse keeps (`gatehouse:`).
    pub prefix: String,
    /// The audit stream; `None`: `{prefix}audit`.
    pub audit: Option<String>,
}

impl Default for KeySchema {
    fn default() -> Self {
        Self {
            owner_prefix: "chat_session_owner:".into(),
            user_sessions_prefix: "user_chat_sessions:".into(),
            prefix: "gatehouse:".into(),
            audit: None,
        }
    }
}

impl KeySchema {
    /// The owner key of a session.
    pub fn owner(&self, session_id: &str) -> String {
        format!("{}{}", self.owner_prefix, session_id)
    }

    /// The index set of a user's sessions.
    pub fn user_sessions(&self, user: &str) -> String {
        format!("{}{}", self.user_sessions_prefix, user)
    }

    /// The enforcement settings hash (fields `version` and `settings`).
    pub fn settings(&self) -> String {
        format!("{}{{enforcement}}", self.prefix)
    }

    /// The settings history, a sorted set of JSON entries scored by version.
    pub fn history(&self) -> String {
        format!("{}{{enforcement}}:history", self.prefix)
    }

    /// The audit stream.
    pub fn audit(&self) -> String {
        self.audit
            .clone()
            .unwrap_or_else(|| format!("{}audit", self.prefix))
    }

    /// The hash of each audit writer's last appended sequence number, in the stream's Cluster
    /// slot (the append script touches both): `{stream}:writers`, whose hash tag is the stream
    /// key itself, or `stream:writers` when the stream key has a hash tag of its own.
    pub fn audit_writers(&self) -> String {
        let audit = self.audit();
        if has_hash_tag(&audit) {
            format!("{audit}:writers")
        } else {
            format!("{{{audit}}}:writers")
        }
    }

    /// Where the writers hash was before it moved into the stream's slot (`stream:writers`),
    /// read where a writer is not in the new one, so that a spool written before an upgrade is
    /// not appended twice; `None` when the name did not change.
    pub fn legacy_audit_writers(&self) -> Option<String> {
        let audit = self.audit();
        (!has_hash_tag(&audit)).then(|| format!("{audit}:writers"))
    }

    /// A backfill job's record.
    pub fn backfill_job(&self, id: &str) -> String {
        format!("{}backfill:job:{id}", self.prefix)
    }

    /// The listing of backfill jobs: a sorted set, every member scored 0, each member a job's
    /// [`JobCursor`](super::JobCursor) (`{created_at ms, 16 digits}:{job_id}`), so that
    /// `ZREVRANGEBYLEX` reads it newest first. Never in a script with the job records (each
    /// of those is in a slot of its own on a Cluster).
    pub fn backfill_jobs(&self) -> String {
        format!("{}backfill:jobs", self.prefix)
    }

    /// The set of sessions a backfill job assigned (and has not rolled back).
    pub fn backfill_assigned(&self, id: &str) -> String {
        format!("{}backfill:job:{id}:assigned", self.prefix)
    }

    /// The summary of the latest backfill verification (a JSON string).
    pub fn last_verification(&self) -> String {
        format!("{}backfill:last-verify", self.prefix)
    }

    /// A bucket of the decision time series: a hash of cell → count, `{stats}:m:{start}` for
    /// a minute, `{stats}:h:{start}` for an hour (start in Unix seconds). Every stats key
    /// shares the hash tag `{stats}`, so the script that adds a batch stays in one Cluster
    /// slot (one small write per instance per second: no hot slot).
    pub fn stats_bucket(&self, resolution: crate::records::Resolution, start: u64) -> String {
        format!("{}{{stats}}:{}:{start}", self.prefix, resolution.as_str())
    }

    /// The last batch number a stats writer added (expires a day after its last batch).
    pub fn stats_writer(&self, writer: &str) -> String {
        format!("{}{{stats}}:writer:{writer}", self.prefix)
    }

    /// The instances' heartbeats: a hash of instance name → JSON record.
    pub fn instances(&self) -> String {
        format!("{}instances", self.prefix)
    }

    /// The record of applied migrations (hash: id → JSON).
    pub fn migrations(&self) -> String {
        format!("{}migrations", self.prefix)
    }

    /// The pub/sub channel on which every ownership write announces the session ids it
    /// changed (newline-separated), for owner caches.
    pub fn owners_channel(&self) -> String {
        format!("{}owners:changed", self.prefix)
    }

    /// The pub/sub channel on which every saved settings record is announced (as JSON).
    pub fn settings_channel(&self) -> String {
        format!("{}enforcement:changed", self.prefix)
    }
}

impl KeySchema {
    /// Whether the prefix of gatehouse's own keys holds a brace: refused on a Cluster, where
    /// those keys are grouped by the tags gatehouse puts after the prefix (`{enforcement}`,
    /// `{stats}`), which a tag in the prefix would take over, and an empty one (`a{}:`) would
    /// undo (each key then hashed whole: the settings and stats scripts fail CROSSSLOT).
    pub fn prefix_has_braces(&self) -> bool {
        self.prefix.contains(['{', '}'])
    }

    /// Whether the owner keys carry a hash tag: refused on a Cluster, where the backfill's
    /// marker beside an owner key could then be another session's owner key.
    pub fn owner_keys_are_tagged(&self) -> bool {
        has_hash_tag(&self.owner_prefix)
    }

    /// Beside a session's owner key, in its slot (a hash tag of the whole owner key): the
    /// backfill job that assigned the session (Redis Cluster only, where the job's assigned
    /// set lives in another slot; see `store::redis::backfill`).
    pub fn backfill_marker(&self, session_id: &str) -> String {
        let owner = self.owner(session_id);
        if has_hash_tag(&owner) {
            format!("{owner}:backfill")
        } else {
            format!("{{{owner}}}:backfill")
        }
    }
}

/// Whether Redis Cluster hashes `key` by a tag: a `{` followed later by a `}` with something
/// between them (the first such pair counts).
fn has_hash_tag(key: &str) -> bool {
    key.find('{')
        .and_then(|open| key[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_legacy_names() {
        let k = KeySchema::default();
        assert_eq!(k.owner("s1"), "chat_session_owner:s1");
        assert_eq!(k.user_sessions("admin"), "user_chat_sessions:admin");
        assert_eq!(k.settings(), "gatehouse:{enforcement}");
        assert_eq!(k.history(), "gatehouse:{enforcement}:history");
        assert_eq!(k.audit(), "gatehouse:audit");
        assert_eq!(k.audit_writers(), "{gatehouse:audit}:writers");
        assert_eq!(k.backfill_marker("s1"), "{chat_session_owner:s1}:backfill");
        assert_eq!(k.backfill_jobs(), "gatehouse:backfill:jobs");
        assert_eq!(
            k.legacy_audit_writers().as_deref(),
            Some("gatehouse:audit:writers")
        );
        let tagged = KeySchema {
            audit: Some("app:{audit}".into()),
            ..KeySchema::default()
        };
        assert_eq!(tagged.audit_writers(), "app:{audit}:writers");
        assert_eq!(tagged.legacy_audit_writers(), None);
        assert!(!has_hash_tag("a{}b") && has_hash_tag("a{b}") && !has_hash_tag("a}{b"));
    }
}
