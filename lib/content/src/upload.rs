//! Upload tickets, registration of streamed bytes, media lookups and storage accounting.

use crate::ContentService;
use crate::store::{self, media_rid};
use anyhow::Context as _;
use mosaic_api::content::{
    ACCEPTED_TYPES, BeginUpload, ByMedia, CompleteUpload, Media, MediaAccepted, MediaKind, MediaStatus, ProcessMedia,
    StorageUsage, UploadTicket, layout, sniff,
};
use mosaic_api::endpoint::Empty;
use mosaic_api::{ApiError, ErrorCode, Id, MediaId, UploadId};
use mosaic_mesh::outbox::Staged;
use mosaic_mesh::write::NoRefusal;
use mosaic_mesh::{Ctx, ServiceResult};
use object_store::ObjectStoreExt as _;
use object_store::path::Path;
use std::sync::Arc;
use surrealdb::types::RecordId;

impl ContentService {
    pub(crate) async fn begin_upload(self: Arc<Self>, ctx: Ctx, req: BeginUpload) -> ServiceResult<UploadTicket> {
        let owner = ctx.require_user()?.clone();
        let kind = MediaKind::of_mime(&req.mime).ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("{} is not accepted; send one of {}", req.mime, ACCEPTED_TYPES.join(", ")),
            )
        })?;
        let limit = match kind {
            MediaKind::Image => self.config.max_image_bytes,
            MediaKind::Video => self.config.max_video_bytes,
        };
        if req.declared_bytes.is_some_and(|n| n > limit) {
            return Err(too_large(limit).into());
        }
        let remaining =
            self.config.quota_bytes.saturating_sub(store::usage(&self.db, &owner).await?.bytes.max(0) as u64);
        if remaining == 0 || req.declared_bytes.is_some_and(|n| n > remaining) {
            return Err(quota_exceeded().into());
        }
        let upload_id = UploadId::generate();
        let max_bytes = limit.min(remaining);
        store::create_upload(&self.db, &upload_id, &owner, &req.mime, max_bytes as i64).await?;
        Ok(UploadTicket { staging_key: layout::staging(&upload_id), upload_id, max_bytes })
    }

    pub(crate) async fn complete_upload(
        self: Arc<Self>,
        ctx: Ctx,
        req: CompleteUpload,
    ) -> ServiceResult<MediaAccepted> {
        let owner = ctx.require_user()?.clone();
        let staging = Path::from(layout::staging(&req.upload_id));
        let ticket = store::upload(&self.db, &req.upload_id).await?;
        let Some(ticket) = ticket.filter(|t| t.owner == owner.as_str()) else {
            return Err(ApiError::not_found("no such upload").into());
        };
        let reject = |e: ApiError| async {
            self.discard(&req.upload_id).await;
            Err(e.into())
        };
        if ticket.mime != req.mime {
            return reject(ApiError::new(ErrorCode::UnsupportedMediaType, "the upload's type changed")).await;
        }
        if req.sha256.len() != 64 || !req.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return reject(ApiError::validation("sha256 must be 64 hex digits")).await;
        }
        if req.bytes == 0 {
            return reject(ApiError::validation("the upload is empty")).await;
        }
        if req.bytes > ticket.max_bytes.max(0) as u64 {
            return reject(too_large(ticket.max_bytes as u64)).await;
        }
        // Trust nothing the edge measured: the stored object is what gets processed.
        let meta = self.storage.store.head(&staging).await.context("reading the staged upload")?;
        if meta.size != req.bytes {
            return reject(ApiError::validation("the stored size differs from the declared size")).await;
        }
        let head = self
            .storage
            .store
            .get_range(&staging, 0..req.bytes.min(sniff::PREFIX_LEN as u64))
            .await
            .context("reading the staged upload")?;
        match sniff::sniff(&head) {
            Some(actual) if sniff::matches(&req.mime, actual) => {}
            _ => {
                return reject(ApiError::new(
                    ErrorCode::UnsupportedMediaType,
                    format!("the bytes are not {}", req.mime),
                ))
                .await;
            }
        }
        if store::usage(&self.db, &owner).await?.bytes.max(0) as u64 + req.bytes > self.config.quota_bytes {
            return reject(quota_exceeded()).await;
        }

        // Content-addressed: identical bytes are stored once, whoever uploads them.
        let blob_key = Path::from(layout::blob(&req.sha256));
        match self.storage.store.head(&blob_key).await {
            Ok(_) => {
                let _ = self.storage.store.delete(&staging).await;
            }
            Err(object_store::Error::NotFound { .. }) => {
                self.storage.store.rename(&staging, &blob_key).await.context("storing the original")?;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("checking for an identical original").into()),
        }

        let media_id = MediaId::generate();
        let kind = MediaKind::of_mime(&req.mime).unwrap_or(MediaKind::Image);
        let jobs = vec![Staged::new(ProcessMedia { media_id: media_id.clone() })];
        self.outbox
            .write(store::REGISTER_MEDIA)
            .bind("blob", RecordId::new("blob", req.sha256.as_str()))
            .bind("sha", req.sha256.clone())
            .bind("bytes", req.bytes as i64)
            .bind("mime", req.mime.clone())
            .bind("media", media_rid(&media_id))
            .bind("owner", owner.to_string())
            .bind("kind", if kind == MediaKind::Video { "video" } else { "image" })
            .bind("usage", RecordId::new("usage", owner.as_str()))
            .bind("upload", RecordId::new("upload", req.upload_id.as_str()))
            .stage_inserted(jobs)
            .run::<NoRefusal>()
            .await
            .context("registering media")?;
        tracing::info!(media = %media_id, %owner, bytes = req.bytes, mime = %req.mime, "upload registered");
        Ok(MediaAccepted { id: media_id, status: MediaStatus::Processing })
    }

    pub(crate) async fn get_media(self: Arc<Self>, ctx: Ctx, req: ByMedia) -> ServiceResult<Media> {
        let viewer = ctx.require_user()?;
        let media = store::media(&self.db, &req.media_id).await?.filter(|m| !m.deleted);
        match media {
            // Others see an item only once it is ready (and only if they know its id).
            Some(m) if m.owner == viewer.as_str() || m.status() == MediaStatus::Ready => Ok(m.to_api()),
            _ => Err(ApiError::not_found("no such media").into()),
        }
    }

    pub(crate) async fn storage_usage(self: Arc<Self>, ctx: Ctx, _req: Empty) -> ServiceResult<StorageUsage> {
        let owner = ctx.require_user()?;
        let usage = store::usage(&self.db, owner).await?;
        Ok(StorageUsage {
            used_bytes: usage.bytes.max(0) as u64,
            limit_bytes: self.config.quota_bytes,
            media_count: usage.media.max(0) as u64,
        })
    }

    /// Drops a refused upload: its bytes and its ticket.
    async fn discard(&self, upload: &UploadId) {
        let _ = self.storage.store.delete(&Path::from(layout::staging(upload))).await;
        let _ = store::delete_upload(&self.db, upload).await;
    }
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(ErrorCode::PayloadTooLarge, format!("uploads of this type are limited to {limit} bytes"))
}

fn quota_exceeded() -> ApiError {
    ApiError::new(ErrorCode::QuotaExceeded, "this upload would exceed your storage quota")
}
