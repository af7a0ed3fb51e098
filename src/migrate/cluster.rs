//! The single-slot forms of the migration steps whose scripts touch keys they compute (an
//! owner's index set, the other spellings of an id): on a Redis Cluster those keys live in
//! other slots than the step's own, and a script may only touch keys of one slot. Each routine
//! does what its step's script does, with one command per key (`migrations/README.md`).
//!
//! They are not atomic per key as the scripts are. Where that matters they take the stricter
//! way: an owner key is only ever created with `SET NX` (a claim in between wins and is then a
//! collision to resolve by hand), and a stale index entry is removed only after the owner key
//! was read, then the owner key is read again and the entry put back if it became that user's
//! meanwhile (as `store::redis::index` does).

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::store::{KeySchema, RedisStore, StoreError};

/// A step's single-slot form (`cluster = "..."` in its TOML).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum ClusterStep {
    /// 0002 step 1: adds every owned session to its owner's index set.
    IndexOwned,
    /// 0002 step 2: removes index members whose owner key is gone or names someone else.
    DropStale,
    /// 0003: moves the spellings of one UUID to its canonical owner key.
    RewriteGroup,
}

fn utf8(batch: &[Vec<u8>]) -> Vec<&str> {
    batch
        .iter()
        .filter_map(|key| std::str::from_utf8(key).ok())
        .collect()
}

/// [`ClusterStep::IndexOwned`] on one `SCAN` batch of owner keys: how many sessions were (or
/// would be) added to their owner's set.
pub(super) async fn index_owned(
    store: &RedisStore,
    keys: &KeySchema,
    batch: &[Vec<u8>],
    dry_run: bool,
) -> Result<u64, StoreError> {
    let ids: Vec<&str> = utf8(batch)
        .into_iter()
        .filter_map(|key| key.strip_prefix(keys.owner_prefix.as_str()))
        .collect();
    let owners = store.owners_of(&ids).await?;
    let mut changed = 0;
    for (id, owner) in ids.iter().zip(owners) {
        let Some(owner) = owner else { continue };
        let set = keys.user_sessions(&owner);
        let listed: bool = store
            .read_command(redis::cmd("SISMEMBER").arg(&set).arg(*id))
            .await?;
        if !listed {
            changed += 1;
            if !dry_run {
                store
                    .write_command::<()>(redis::cmd("SADD").arg(&set).arg(*id))
                    .await?;
            }
        }
    }
    Ok(changed)
}

/// [`ClusterStep::DropStale`] on one `SCAN` batch of index sets: how many members were (or
/// would be) removed.
pub(super) async fn drop_stale(
    store: &RedisStore,
    keys: &KeySchema,
    batch: &[Vec<u8>],
    dry_run: bool,
) -> Result<u64, StoreError> {
    let mut changed = 0;
    for set in utf8(batch) {
        let Some(user) = set.strip_prefix(keys.user_sessions_prefix.as_str()) else {
            continue;
        };
        let members: Vec<String> = store.read_command(redis::cmd("SMEMBERS").arg(set)).await?;
        let ids: Vec<&str> = members.iter().map(String::as_str).collect();
        let owners = store.owners_of(&ids).await?;
        for (id, owner) in ids.iter().zip(owners) {
            if owner.as_deref() == Some(user) {
                continue;
            }
            changed += 1;
            if dry_run {
                continue;
            }
            store
                .write_command::<()>(redis::cmd("SREM").arg(set).arg(*id))
                .await?;
            // A transfer to `user` may have added it back just before the removal.
            if store.owners_of(&[id]).await?[0].as_deref() == Some(user) {
                store
                    .write_command::<()>(redis::cmd("SADD").arg(set).arg(*id))
                    .await?;
                changed -= 1;
            }
        }
    }
    Ok(changed)
}

/// [`ClusterStep::RewriteGroup`] for one canonical id and its other spellings: the reply the
/// step's script gives (`{'gone'}`, `{'collision', id, owner, ...}` or `{'rewritten', owner,
/// n}`).
pub(super) async fn rewrite_group(
    store: &RedisStore,
    keys: &KeySchema,
    canonical: &str,
    aliases: &BTreeSet<String>,
    dry_run: bool,
) -> Result<Vec<String>, StoreError> {
    let aliases: Vec<&str> = aliases.iter().map(String::as_str).collect();
    let canonical_owner = store.owners_of(&[canonical]).await?.remove(0);
    let present: Vec<(&str, String)> = aliases
        .iter()
        .copied()
        .zip(store.owners_of(&aliases).await?)
        .filter_map(|(id, owner)| Some((id, owner?)))
        .collect();
    let Some((_, owner)) = present.first() else {
        return Ok(vec!["gone".into()]);
    };
    let owner = owner.clone();
    let distinct: BTreeSet<&str> = canonical_owner
        .iter()
        .map(String::as_str)
        .chain(present.iter().map(|(_, o)| o.as_str()))
        .collect();
    let collision = |canonical_owner: Option<&String>| {
        let mut reply = vec!["collision".to_owned()];
        if let Some(owner) = canonical_owner {
            reply.extend([canonical.to_owned(), owner.clone()]);
        }
        for (id, owner) in &present {
            reply.extend([(*id).to_owned(), owner.clone()]);
        }
        reply
    };
    if distinct.len() > 1 {
        return Ok(collision(canonical_owner.as_ref()));
    }
    let moved = present.len().to_string();
    if dry_run {
        return Ok(vec!["rewritten".into(), owner, moved]);
    }
    if canonical_owner.is_none() {
        // The longest remaining lifetime of the spellings (-1: persistent wins).
        let mut keep: i64 = -2;
        for (id, _) in &present {
            let ttl: i64 = store
                .read_command(redis::cmd("PTTL").arg(keys.owner(id)))
                .await?;
            keep = if ttl == -1 || keep == -1 {
                -1
            } else {
                keep.max(ttl)
            };
        }
        let mut set = redis::cmd("SET");
        set.arg(keys.owner(canonical)).arg(&owner).arg("NX");
        if keep > 0 {
            set.arg("PX").arg(keep);
        }
        let created: Option<String> = store.write_command(&set).await?;
        if created.is_none() {
            // Claimed meanwhile: unless by the same owner, a collision to resolve by hand.
            let now = store.owners_of(&[canonical]).await?.remove(0);
            if now.as_deref() != Some(owner.as_str()) {
                return Ok(collision(now.as_ref()));
            }
        }
    }
    let index = keys.user_sessions(&owner);
    for (id, _) in &present {
        store
            .write_command::<()>(redis::cmd("DEL").arg(keys.owner(id)))
            .await?;
        store
            .write_command::<()>(redis::cmd("SREM").arg(&index).arg(*id))
            .await?;
    }
    store
        .write_command::<()>(redis::cmd("SADD").arg(&index).arg(canonical))
        .await?;
    Ok(vec!["rewritten".into(), owner, moved])
}
