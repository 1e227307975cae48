//! Background upkeep: the watchdog (jobs whose worker died) and the sweeper (storage nobody
//! references any more). Both are safe to run on every instance at once: each step is a
//! conditional update or an idempotent delete.

use crate::ContentService;
use crate::store::{MEDIA_FIELDS, MediaRow};
use anyhow::Context as _;
use chrono::Utc;
use futures::TryStreamExt;
use mosaic_api::content::{MediaError, ProcessMedia, layout};
use mosaic_api::{Id, MediaId};
use mosaic_mesh::Lifecycle;
use mosaic_mesh::db::Checked as _;
use mosaic_mesh::outbox::Staged;
use mosaic_mesh::write::{NoRefusal, Write};
use object_store::path::Path;
use object_store::{ObjectStore as _, ObjectStoreExt as _};
use std::sync::Arc;
use std::time::Duration;
use surrealdb::types::{RecordId, SurrealValue};

/// Uploads abandoned mid-stream are removed after this long.
const STAGING_TTL_SECS: i64 = 3600;

#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct BlobRow {
    key: String,
}

pub(crate) fn spawn(state: Arc<ContentService>, lifecycle: &Lifecycle) {
    let shutdown = lifecycle.shutdown().clone();
    lifecycle.spawn(async move {
        let interval = Duration::from_secs(state.config.sweep_interval_secs);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
                _ = state.sweep.notified() => {}
            }
            if let Err(e) = state.watchdog().await {
                tracing::warn!(error = format!("{e:#}"), "media watchdog failed");
            }
            if let Err(e) = state.sweep().await {
                tracing::warn!(error = format!("{e:#}"), "storage sweep failed");
            }
        }
    });
}

impl ContentService {
    /// Runs the sweeper now rather than at its next interval.
    pub(crate) fn sweep_soon(&self) {
        self.sweep.notify_one();
    }

    /// Media stuck in `processing` (its worker died and the job is gone or stuck) is queued
    /// again, or failed once it has had its attempts.
    async fn watchdog(&self) -> anyhow::Result<()> {
        let horizon = Utc::now() - chrono::Duration::seconds(self.config.processing_timeout_secs as i64);
        let mut res = self
            .db
            .query(format!(
                "SELECT {MEDIA_FIELDS} FROM media WHERE status = 'processing' AND updated_at < $horizon LIMIT 100"
            ))
            .bind(("horizon", horizon))
            .await
            .context("finding stuck media")?;
        let stuck: Vec<MediaRow> = res.take(0).context("finding stuck media")?;
        for media in stuck {
            let id = media.id();
            if media.attempts >= i64::from(self.config.max_attempts) {
                tracing::warn!(media = %id, attempts = media.attempts, "failing media stuck in processing");
                self.fail(&id, MediaError::TooManyAttempts).await?;
                continue;
            }
            tracing::warn!(media = %id, attempts = media.attempts, "re-queueing media stuck in processing");
            let jobs = vec![Staged::new(ProcessMedia { media_id: id.clone() })];
            self.outbox
                .write(
                    "BEGIN TRANSACTION;
                     UPDATE $rid SET updated_at = time::now() WHERE status = 'processing';
                     INSERT INTO outbox $events;
                     COMMIT TRANSACTION;",
                )
                .bind("rid", RecordId::new("media", id.as_str()))
                .stage_inserted(jobs)
                .run::<NoRefusal>()
                .await
                .context("re-queueing media")?;
        }
        Ok(())
    }

    async fn sweep(&self) -> anyhow::Result<()> {
        let now = Utc::now();
        // Media never attached to a post in time goes the way of deleted media.
        self.db
            .query("UPDATE media SET deleted = true WHERE post = NONE AND deleted = false AND created_at < $horizon")
            .bind(("horizon", now - chrono::Duration::seconds(self.config.unattached_ttl_secs as i64)))
            .await
            .and_then(|r| r.checked())
            .context("expiring unattached media")?;

        let mut res = self
            .db
            .query(format!("SELECT {MEDIA_FIELDS} FROM media WHERE deleted = true LIMIT 200"))
            .await
            .context("finding deleted media")?;
        let deleted: Vec<MediaRow> = res.take(0).context("finding deleted media")?;
        for media in deleted {
            self.remove_media(&media).await?;
        }

        let mut res = self
            .db
            .query("SELECT record::id(id) AS key FROM blob WHERE refs <= 0 LIMIT 200")
            .await
            .context("finding unused originals")?;
        let unused: Vec<BlobRow> = res.take(0).context("finding unused originals")?;
        for blob in unused {
            delete_object(self, &Path::from(layout::blob(&blob.key))).await?;
            // Only if nobody re-used it meanwhile.
            self.db
                .query("DELETE $rid WHERE refs <= 0")
                .bind(("rid", RecordId::new("blob", blob.key.as_str())))
                .await
                .and_then(|r| r.checked())
                .context("forgetting unused original")?;
        }

        // Uploads that never completed.
        let horizon = now - chrono::Duration::seconds(STAGING_TTL_SECS);
        self.db
            .query("DELETE upload WHERE created_at < $horizon")
            .bind(("horizon", horizon))
            .await
            .and_then(|r| r.checked())
            .context("expiring upload tickets")?;
        let staged: Vec<object_store::ObjectMeta> = self
            .storage
            .store
            .list(Some(&Path::from(layout::STAGING_PREFIX)))
            .try_collect()
            .await
            .context("listing staging")?;
        for object in staged.into_iter().filter(|o| o.last_modified < horizon) {
            delete_object(self, &object.location).await?;
        }
        Ok(())
    }

    /// Deletes a media item's renditions, releases its original and its quota.
    async fn remove_media(&self, media: &MediaRow) -> anyhow::Result<()> {
        let id: MediaId = media.id();
        let variants: Vec<object_store::ObjectMeta> = self
            .storage
            .store
            .list(Some(&Path::from(layout::media_prefix(&id))))
            .try_collect()
            .await
            .context("listing renditions")?;
        for object in variants {
            delete_object(self, &object.location).await?;
        }
        Write::new(
            &self.db,
            "BEGIN TRANSACTION;
             IF record::exists($rid) {
                UPDATE $blob SET refs -= 1;
                UPDATE $usage SET bytes -= $bytes, media -= 1;
                DELETE $rid;
             };
             COMMIT TRANSACTION;",
        )
        .bind("rid", RecordId::new("media", id.as_str()))
        .bind("blob", RecordId::new("blob", media.blob.as_str()))
        .bind("usage", RecordId::new("usage", media.owner.as_str()))
        .bind("bytes", media.bytes)
        .run::<NoRefusal>()
        .await
        .context("releasing media")?;
        tracing::debug!(media = %id, "media removed from storage");
        Ok(())
    }
}

async fn delete_object(state: &ContentService, path: &Path) -> anyhow::Result<()> {
    match state.storage.store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("deleting {path}"))),
    }
}
