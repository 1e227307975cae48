//! Content-service settings (`[content]`, `MOSAIC_CONTENT__*`).

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// Settings of the content service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Posts one user may publish per hour; beyond it, 429. 0 lifts the limit.
    pub posts_per_hour: u32,
    /// Largest photo upload.
    pub max_image_bytes: u64,
    /// Largest video upload.
    pub max_video_bytes: u64,
    /// Largest decoded image (width × height): guards against decompression bombs.
    pub max_image_pixels: u64,
    /// Longest video accepted, in seconds.
    pub max_video_seconds: u64,
    /// Lossy WebP quality of image variants (0–100).
    pub webp_quality: f32,
    /// Jobs one instance processes at once.
    pub workers: usize,
    /// Wall-clock limit of one video transcode.
    pub video_time_limit_secs: u64,
    /// Encoder threads of one video transcode (with `workers` transcodes at once).
    pub video_threads: u32,
    /// A job unacknowledged this long is redelivered (the worker is presumed dead).
    pub job_ack_wait_secs: u64,
    /// Attempts at processing one media item before it fails for good.
    pub max_attempts: u32,
    /// Delays before retrying a failed attempt, in milliseconds (the last one repeats).
    pub job_retry_backoff_ms: Vec<u64>,
    /// Media still `processing` this long after its last attempt started is retried, or
    /// failed once out of attempts (the watchdog).
    pub processing_timeout_secs: u64,
    /// Media not attached to a post within this time is deleted.
    pub unattached_ttl_secs: u64,
    /// How often the sweeper and watchdog run.
    pub sweep_interval_secs: u64,
    /// Storage quota per user.
    pub quota_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            posts_per_hour: 50,
            max_image_bytes: 50 * 1024 * 1024,
            max_video_bytes: 1024 * 1024 * 1024,
            max_image_pixels: 50_000_000,
            max_video_seconds: 15 * 60,
            webp_quality: 82.0,
            workers: 2,
            video_time_limit_secs: 15 * 60,
            video_threads: 2,
            job_ack_wait_secs: 60,
            max_attempts: 3,
            job_retry_backoff_ms: vec![1_000, 5_000, 30_000],
            processing_timeout_secs: 30 * 60,
            unattached_ttl_secs: 24 * 3600,
            sweep_interval_secs: 300,
            quota_bytes: 10 * 1024 * 1024 * 1024,
        }
    }
}

impl mosaic_mesh::component::Section for Config {
    /// Rejects settings the service cannot run with, naming the setting.
    fn validate(&self) -> anyhow::Result<()> {
        if !(1.0..=100.0).contains(&self.webp_quality) {
            bail!("content.webp_quality must be between 1 and 100");
        }
        if self.workers == 0 || self.max_attempts == 0 || self.video_threads == 0 {
            bail!("content.workers, content.max_attempts and content.video_threads must be positive");
        }
        if self.job_ack_wait_secs < 2 || self.sweep_interval_secs == 0 {
            bail!("content.job_ack_wait_secs must be at least 2 and content.sweep_interval_secs positive");
        }
        if self.job_retry_backoff_ms.is_empty() {
            bail!("content.job_retry_backoff_ms needs at least one delay");
        }
        if self.max_image_pixels < 1_000_000 {
            bail!("content.max_image_pixels must allow at least 1 megapixel");
        }
        Ok(())
    }
}
