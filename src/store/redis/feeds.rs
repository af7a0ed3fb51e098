//! Subscriptions, each on a dedicated connection: the settings channel and the owner-change
//! channel (with its heartbeat, the owner cache's proof that the subscription delivers).

use async_trait::async_trait;
use futures_util::StreamExt;

use super::{OWNERS_HEARTBEAT, RedisStore};
use crate::store::{OwnerChanges, OwnerFeed, StoreError};

impl RedisStore {
    /// Subscribes to `channel` on a dedicated connection; each message payload is mapped by
    /// `read` (items it maps to `None` are skipped). The stream ends when the subscription is
    /// lost.
    pub(super) async fn subscribe<T: Send + 'static>(
        &self,
        channel: String,
        read: fn(String) -> Option<T>,
    ) -> Result<futures_util::stream::BoxStream<'static, T>, StoreError> {
        let node = self.node().await?;
        // A Cluster delivers every message on every node: the first seed that answers.
        let mut failed = None;
        let mut subscribed = None;
        for client in &node.subscribers {
            let subscribe = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok(pubsub)
            };
            match self.bounded(subscribe).await {
                Ok(pubsub) => {
                    subscribed = Some(pubsub);
                    break;
                }
                Err(e) => failed = Some(e),
            }
        }
        let Some(pubsub) = subscribed else {
            return Err(
                failed.unwrap_or_else(|| StoreError::Unavailable("nowhere to subscribe".into()))
            );
        };
        // Ends when the node is replaced (the master moved): the watcher subscribes again.
        let retired = node.retired.clone().cancelled_owned();
        Ok(pubsub
            .into_on_message()
            .take_until(retired)
            .filter_map(move |message| {
                let item = message.get_payload::<String>().ok().and_then(read);
                std::future::ready(item)
            })
            .boxed())
    }
}

#[async_trait]
impl OwnerChanges for RedisStore {
    /// Publishes `OWNERS_HEARTBEAT` on the owner-change channel: the subscriber's proof that
    /// its subscription still delivers (see the owner cache, `store::cache`).
    async fn owners_heartbeat(&self) -> Result<(), StoreError> {
        let mut conn = self.conn().await?;
        let channel = self.keys.owners_channel();
        self.bounded(async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(OWNERS_HEARTBEAT)
                .query_async::<i64>(&mut conn)
                .await
        })
        .await
        .map(drop)
    }

    /// Subscribes to the owner changes announced by every write (claims, transfers, releases,
    /// backfill): each item is the ids of one write.
    async fn owner_changes(&self) -> Result<OwnerFeed, StoreError> {
        self.subscribe(self.keys.owners_channel(), |ids: String| {
            Some(ids.split('\n').map(str::to_owned).collect())
        })
        .await
    }
}
