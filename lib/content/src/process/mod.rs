//! The media worker: one job per media item from the `MEDIA_JOBS` work queue.
//!
//! Idempotent: a job for an item that is no longer `processing` is acknowledged and
//! forgotten, and variants are written under fixed keys, so a redelivered or duplicated job
//! does no harm. Every delivery counts an attempt; past `max_attempts` the item fails with
//! `too_many_attempts` and the job goes to the dead-letter stream, so a file that kills its
//! worker every time cannot block the queue.

pub mod image;
pub mod video;

use crate::ContentService;
use crate::store::{self, MediaRow, error_name, media_rid};
use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt;
use mosaic_api::content::{MediaError, MediaKind, ProcessMedia, layout};
use mosaic_api::{Envelope, MediaId};
use mosaic_mesh::Ctx;
use mosaic_mesh::jetstream::HandlerError;
use mosaic_mesh::write::{NoRefusal, Write};
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};
use std::sync::Arc;
use std::time::Duration;
use surrealdb::types::SurrealValue;
use tokio::io::AsyncWriteExt;

/// How one attempt ended.
enum Failure {
    /// The file itself is the problem: the item fails, the job is done.
    Media(MediaError),
    /// The worker or a dependency failed: try again later.
    Retry(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Retry(e)
    }
}

/// A finished rendition, ready to be recorded.
#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
struct Made {
    name: String,
    mime: String,
    width: i64,
    height: i64,
    bytes: i64,
}

struct Done {
    variants: Vec<Made>,
    width: u32,
    height: u32,
    blurhash: String,
    duration_ms: Option<u64>,
}

impl ContentService {
    pub(crate) async fn process(self: Arc<Self>, _ctx: Ctx, job: Envelope<ProcessMedia>) -> Result<(), HandlerError> {
        let id = job.data.media_id;
        let Some(media) = store::media(&self.db, &id).await? else { return Ok(()) };
        if media.status != "processing" || media.deleted {
            return Ok(());
        }
        let attempts = self.count_attempt(&id).await?;
        if attempts > i64::from(self.config.max_attempts) {
            self.fail(&id, MediaError::TooManyAttempts).await?;
            return Err(HandlerError::Permanent(format!("media {id} failed {} attempts", attempts - 1)));
        }
        let started = std::time::Instant::now();
        let outcome = match media.kind() {
            MediaKind::Image => self.process_image(&media).await,
            MediaKind::Video => self.process_video(&media).await,
        };
        match outcome {
            Ok(done) => {
                self.finish(&id, done).await?;
                tracing::info!(media = %id, attempt = attempts, ms = started.elapsed().as_millis() as u64, "media ready");
                Ok(())
            }
            Err(Failure::Media(reason)) => {
                tracing::info!(media = %id, ?reason, "media failed");
                self.fail(&id, reason).await?;
                Ok(())
            }
            Err(Failure::Retry(e)) => Err(HandlerError::Transient(e)),
        }
    }

    async fn count_attempt(&self, id: &MediaId) -> anyhow::Result<i64> {
        let mut res = Write::new(&self.db, store::COUNT_ATTEMPT)
            .bind("rid", media_rid(id))
            .run::<NoRefusal>()
            .await
            .context("counting attempt")?;
        let attempts: Vec<i64> = res.take(0).context("counting attempt")?;
        Ok(attempts.first().copied().unwrap_or(1))
    }

    async fn process_image(&self, media: &MediaRow) -> Result<Done, Failure> {
        let original = self.original(media).await?;
        let (max_pixels, quality) = (self.config.max_image_pixels, self.config.webp_quality);
        let rendered =
            self.cpu_bound(move || image::render(&original, max_pixels, quality, image::PHOTO_SIZES)).await??;
        let variants = self.store_renditions(&media.id(), rendered.renditions).await?;
        Ok(Done {
            variants,
            width: rendered.width,
            height: rendered.height,
            blurhash: rendered.blurhash,
            duration_ms: None,
        })
    }

    async fn process_video(&self, media: &MediaRow) -> Result<Done, Failure> {
        let dir = tempfile::tempdir().context("creating a work directory")?;
        let input = dir.path().join("original");
        self.download(media, &input).await?;
        let output = dir.path().join("out.mp4");
        let poster_png = dir.path().join("poster.png");
        let limit = Duration::from_secs(self.config.video_time_limit_secs);
        let max_seconds = self.config.max_video_seconds;
        let (max_pixels, quality) = (self.config.max_image_pixels, self.config.webp_quality);
        let threads = self.config.video_threads;
        let (probe, poster) = {
            let (input, output, poster_png) = (input.clone(), output.clone(), poster_png.clone());
            self.cpu_bound(move || -> Result<_, video::VideoError> {
                let probe = video::probe(&input, Duration::from_secs(30))?;
                if probe.duration_ms > max_seconds * 1000 + 500 {
                    return Err(MediaError::TooLong.into());
                }
                video::transcode(&input, &output, &probe, max_seconds, threads, limit)?;
                let at = (probe.duration_ms / 2).min(1000);
                video::poster(&output, &poster_png, at, Duration::from_secs(60))?;
                let png = std::fs::read(&poster_png).map_err(|_| MediaError::CorruptFile)?;
                let poster = image::render(&png, max_pixels, quality, image::POSTER_SIZES)?;
                Ok((probe, poster))
            })
            .await??
        };
        let id = media.id();
        let mp4 = tokio::fs::read(&output).await.context("reading the transcoded video")?;
        let (w, h) = video::target_size(probe.width, probe.height);
        let mut variants = vec![self.put_variant(&id, "mp4", Bytes::from(mp4), w, h).await?];
        variants.extend(self.store_renditions(&id, poster.renditions).await?);
        Ok(Done {
            variants,
            width: probe.width,
            height: probe.height,
            blurhash: poster.blurhash,
            duration_ms: Some(probe.duration_ms),
        })
    }

    /// Runs CPU-heavy work on the blocking pool, at most `workers` at a time; a panic in it
    /// counts as a crashed attempt.
    async fn cpu_bound<T, F>(&self, f: F) -> Result<T, Failure>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let _permit = self.cpu.acquire().await.map_err(|e| Failure::Retry(e.into()))?;
        tokio::task::spawn_blocking(f).await.map_err(|e| Failure::Retry(anyhow::anyhow!("worker crashed: {e}")))
    }

    async fn original(&self, media: &MediaRow) -> anyhow::Result<Bytes> {
        let key = Path::from(layout::blob(&media.blob));
        let result = self.storage.store.get(&key).await.with_context(|| format!("reading original {key}"))?;
        result.bytes().await.with_context(|| format!("reading original {key}"))
    }

    /// Streams the original to a file (videos can be far larger than memory should hold).
    async fn download(&self, media: &MediaRow, to: &std::path::Path) -> anyhow::Result<()> {
        let key = Path::from(layout::blob(&media.blob));
        let mut stream =
            self.storage.store.get(&key).await.with_context(|| format!("reading original {key}"))?.into_stream();
        let mut file = tokio::fs::File::create(to).await.context("creating work file")?;
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk.context("reading original")?).await.context("writing work file")?;
        }
        file.flush().await.context("writing work file")?;
        Ok(())
    }

    async fn store_renditions(&self, id: &MediaId, renditions: Vec<image::Rendition>) -> anyhow::Result<Vec<Made>> {
        let mut made = Vec::with_capacity(renditions.len());
        for r in renditions {
            made.push(self.put_variant(id, r.name, Bytes::from(r.data), r.width, r.height).await?);
        }
        Ok(made)
    }

    async fn put_variant(
        &self,
        id: &MediaId,
        name: &str,
        data: Bytes,
        width: u32,
        height: u32,
    ) -> anyhow::Result<Made> {
        let key = layout::variant(id, name).with_context(|| format!("unknown variant {name}"))?;
        let (_, mime) = layout::variant_file(name).unwrap_or(("bin", "application/octet-stream"));
        let bytes = data.len() as i64;
        self.storage
            .store
            .put(&Path::from(key.as_str()), PutPayload::from_bytes(data))
            .await
            .with_context(|| format!("writing {key}"))?;
        Ok(Made {
            name: name.to_owned(),
            mime: mime.to_owned(),
            width: i64::from(width),
            height: i64::from(height),
            bytes,
        })
    }

    async fn finish(&self, id: &MediaId, done: Done) -> anyhow::Result<()> {
        Write::new(&self.db, store::MEDIA_READY)
            .bind("rid", media_rid(id))
            .bind("variants", done.variants)
            .bind("width", i64::from(done.width))
            .bind("height", i64::from(done.height))
            .bind("blurhash", done.blurhash)
            .bind("duration", done.duration_ms.map(|d| d as i64))
            .run::<NoRefusal>()
            .await
            .context("recording processed media")?;
        Ok(())
    }

    pub(crate) async fn fail(&self, id: &MediaId, reason: MediaError) -> anyhow::Result<()> {
        Write::new(&self.db, store::MEDIA_FAILED)
            .bind("rid", media_rid(id))
            .bind("error", error_name(reason))
            .run::<NoRefusal>()
            .await
            .context("recording failed media")?;
        Ok(())
    }
}

impl From<MediaError> for Failure {
    fn from(e: MediaError) -> Self {
        Failure::Media(e)
    }
}

impl From<video::VideoError> for Failure {
    fn from(e: video::VideoError) -> Self {
        match e {
            video::VideoError::Media(m) => Failure::Media(m),
            video::VideoError::Tool(problem) => Failure::Retry(anyhow::anyhow!(problem)),
        }
    }
}
