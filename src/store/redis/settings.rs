//! The settings port on Redis: one hash (`version`, `settings`) and the history sorted set,
//! changed together by one compare-and-set script, and the settings channel.

use async_trait::async_trait;

use super::RedisStore;
use crate::records::{EnforcementSettings, HistoryEntry};
use crate::store::{SaveOutcome, SettingsFeed, SettingsStore, StoreError};

#[async_trait]
impl SettingsStore for RedisStore {
    async fn load_settings(&self) -> Result<Option<EnforcementSettings>, StoreError> {
        let cmd = redis::cmd("HGET")
            .arg(self.keys.settings())
            .arg("settings")
            .clone();
        let raw: Option<String> = self.read_cmd(&cmd).await?;
        raw.map(|json| serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    async fn save_settings(
        &self,
        expected: u64,
        next: &EnforcementSettings,
        entry: &HistoryEntry,
    ) -> Result<SaveOutcome, StoreError> {
        let settings =
            serde_json::to_string(next).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let entry = serde_json::to_string(entry).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut invocation = self.save_settings.key(self.keys.settings());
        invocation
            .key(self.keys.history())
            .arg(next.version)
            .arg(settings)
            .arg(entry)
            .arg(self.keys.settings_channel())
            .arg(expected);
        let mut conn = self.conn().await?;
        let reply: i64 = self.write(invocation.invoke_async(&mut conn)).await?;
        Ok(match u64::try_from(reply) {
            Ok(current) => SaveOutcome::VersionConflict { current },
            Err(_) => SaveOutcome::Saved,
        })
    }

    async fn history(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let max = before.map_or_else(|| "+inf".to_owned(), |b| format!("({b}"));
        let cmd = redis::cmd("ZREVRANGEBYSCORE")
            .arg(self.keys.history())
            .arg(max)
            .arg("-inf")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .clone();
        let raw: Vec<String> = self.read_cmd(&cmd).await?;
        raw.iter()
            .map(|json| serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string())))
            .collect()
    }

    async fn watch(&self) -> Result<SettingsFeed, StoreError> {
        self.subscribe(self.keys.settings_channel(), |json: String| {
            Some(serde_json::from_str(&json).ok())
        })
        .await
    }
}
