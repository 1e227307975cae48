//! Background upkeep: the watchdog (jobs whose worker died) and the sweeper (storage nobody
//! references any more). Both are safe to run on every instance at once: each step is a
//! conditional update or an idempotent delete.

use crate::ContentService;
use crate::store::{self, MediaRow};
use anyhow::Context as _;
use chrono::Utc;
use futures::TryStreamExt;
use mosaic_api::content::{MediaError, ProcessMedia, layout};
use mosaic_api::{Id, MediaId};
use mosaic_mesh::Lifecycle;
use mosaic_mesh::outbox::Staged;
use mosaic_mesh::write::{NoRefusal, Write};
use object_store::path::Path;
use object_store::{ObjectStore as _, ObjectStoreExt as _};
use std::sync::Arc;
use std::time::Duration;
use surrealdb::types::RecordId;

/// Uploads abandoned mid-stream are removed after this long.
const STAGING_TTL_SECS: i64 = 3600;

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
        for media in store::stuck_media(&self.db, horizon).await? {
            let id = media.id();
            if media.attempts >= i64::from(self.config.max_attempts) {
                tracing::warn!(media = %id, attempts = media.attempts, "failing media stuck in processing");
                self.fail(&id, MediaError::TooManyAttempts).await?;
                continue;
            }
            tracing::warn!(media = %id, attempts = media.attempts, "re-queueing media stuck in processing");
            let jobs = vec![Staged::new(ProcessMedia { media_id: id.clone() })];
            self.outbox
                .write(store::REQUEUE_MEDIA)
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
        let unattached = now - chrono::Duration::seconds(self.config.unattached_ttl_secs as i64);
        store::expire_unattached_media(&self.db, unattached).await?;

        for media in store::deleted_media(&self.db).await? {
            self.remove_media(&media).await?;
        }

        for blob in store::unused_blobs(&self.db).await? {
            delete_object(self, &Path::from(layout::blob(&blob))).await?;
            // Only if nobody re-used it meanwhile.
            store::forget_blob(&self.db, &blob).await?;
        }

        // Uploads that never completed.
        let horizon = now - chrono::Duration::seconds(STAGING_TTL_SECS);
        store::expire_uploads(&self.db, horizon).await?;
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
        Write::new(&self.db, store::RELEASE_MEDIA)
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
