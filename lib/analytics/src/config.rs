//! Analytics-service settings (`[analytics]`, `MOSAIC_ANALYTICS__*`).

use anyhow::bail;
use chrono::NaiveTime;
use mosaic_mesh::clock::Tz;
use serde::{Deserialize, Serialize};

/// Settings of the analytics service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Path prefix of the warehouse in the object store (`storage.url`).
    pub prefix: String,
    /// Consume the event streams (off for a reporting-only instance).
    pub ingest: bool,
    /// Rows buffered before a file is written.
    pub flush_rows: usize,
    /// Longest time rows wait before a file is written.
    pub flush_interval_ms: u64,
    /// How often days with many files are compacted.
    pub compact_interval_secs: u64,
    /// Files a day may have before it is compacted.
    pub compact_min_files: usize,
    /// The IANA time zone reports' days are counted in.
    pub time_zone: String,
    /// Local time (`HH:MM`) at which the previous day's reports are built and emailed.
    pub report_time: String,
    /// Run the daily schedule (an instance may serve queries only).
    pub schedule: bool,
    /// Email the reports (through the notification service).
    pub email_reports: bool,
    /// Posts listed per creator report.
    pub top_posts: usize,
    /// Creators listed in the platform report.
    pub top_creators: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            prefix: "analytics".into(),
            ingest: true,
            flush_rows: 100_000,
            flush_interval_ms: 5_000,
            compact_interval_secs: 600,
            compact_min_files: 8,
            time_zone: "UTC".into(),
            report_time: "06:00".into(),
            schedule: true,
            email_reports: true,
            top_posts: 5,
            top_creators: 10,
        }
    }
}

impl mosaic_mesh::component::Section for Config {
    /// Rejects settings the service cannot run with, naming the setting.
    fn validate(&self) -> anyhow::Result<()> {
        if self.time_zone.parse::<Tz>().is_err() {
            bail!("analytics.time_zone {:?} is not an IANA time zone", self.time_zone);
        }
        if NaiveTime::parse_from_str(&self.report_time, "%H:%M").is_err() {
            bail!("analytics.report_time must be HH:MM, not {:?}", self.report_time);
        }
        if self.flush_rows == 0 || self.flush_interval_ms == 0 || self.compact_interval_secs == 0 {
            bail!(
                "analytics.flush_rows, analytics.flush_interval_ms and analytics.compact_interval_secs must be positive"
            );
        }
        if self.prefix.trim_matches('/').is_empty() {
            bail!("analytics.prefix must not be empty");
        }
        Ok(())
    }
}

impl Config {
    /// The parsed time zone.
    pub fn tz(&self) -> Tz {
        self.time_zone.parse().unwrap_or(chrono_tz_utc())
    }

    /// The parsed report time.
    pub fn report_at(&self) -> NaiveTime {
        NaiveTime::parse_from_str(&self.report_time, "%H:%M").unwrap_or(NaiveTime::MIN)
    }
}

fn chrono_tz_utc() -> Tz {
    "UTC".parse().expect("UTC is a time zone")
}
