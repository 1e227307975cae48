//! Daily reports: SQL over the warehouse for one local day (23, 24 or 25 hours in the
//! configured time zone), stored as JSON beside the events, and emailed through the
//! notification service's email path.

use crate::warehouse::{Warehouse, int_at, lit, string_at};
use anyhow::Context as _;
use base64::Engine as _;
use chrono::{DateTime, NaiveDate, Utc};
use image::{ImageFormat, Rgb, RgbImage};
use mosaic_api::analytics::{CreatorReport, PlatformReport, TopCreator, TopPost};
use mosaic_api::notification::{InlineImage, NotificationType, SendEmail};
use mosaic_api::{Envelope, EventId, Id as _, PostId, UserId};
use mosaic_mesh::clock::{Tz, day_bounds};
use object_store::path::Path;
use object_store::{ObjectStoreExt as _, PutPayload};
use std::collections::HashMap;

/// One local day as the queries see it.
#[derive(Debug, Clone)]
pub struct Day {
    pub date: NaiveDate,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `WHERE` clause: the UTC partitions the day overlaps, then the exact instants.
    pub filter: String,
    /// Hours in the day (23 on spring-forward days, 25 on fall-back days).
    pub hours: usize,
}

impl Day {
    pub fn new(tz: Tz, date: NaiveDate) -> Self {
        let (start, end) = day_bounds(tz, date);
        let mut partitions = Vec::new();
        let mut d = start.date_naive();
        while d <= (end - chrono::Duration::milliseconds(1)).date_naive() {
            partitions.push(lit(&d.format("%Y-%m-%d").to_string()));
            d = d.succ_opt().expect("dates this far out exist");
        }
        let filter = format!(
            "date IN ({}) AND CAST(ts AS BIGINT) >= {} AND CAST(ts AS BIGINT) < {}",
            partitions.join(", "),
            start.timestamp_millis(),
            end.timestamp_millis()
        );
        let hours = ((end - start).num_minutes() as f64 / 60.0).round() as usize;
        Self { date, start, end, filter, hours }
    }
}

/// Per-creator totals of a day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub views: u64,
    pub unique_viewers: u64,
    pub likes: u64,
    pub comments: u64,
    pub new_followers: u64,
}

/// The creator query. Likes count each liker once per post, follows each follower once;
/// views and comments count distinct events (a redelivered event is counted once).
///
/// Written as one de-duplicating `SELECT DISTINCT` over (creator, metric, key) followed by
/// plain sums, rather than five `COUNT(DISTINCT CASE …)`: columnar engines run several
/// distinct aggregates as per-group hash sets, which on 10 M events was 3–6× slower in both
/// DataFusion and DuckDB than one wide hash aggregation (see BENCHMARKS.md).
pub fn creator_sql(filter: &str, owner: Option<&str>) -> String {
    let only = owner.map(|o| format!(" AND owner_id = {}", lit(o))).unwrap_or_default();
    format!(
        "SELECT owner_id,
            SUM(CASE WHEN m = 1 THEN 1 ELSE 0 END) AS views,
            SUM(CASE WHEN m = 2 THEN 1 ELSE 0 END) AS unique_viewers,
            SUM(CASE WHEN m = 3 THEN 1 ELSE 0 END) AS likes,
            SUM(CASE WHEN m = 4 THEN 1 ELSE 0 END) AS comments,
            SUM(CASE WHEN m = 5 THEN 1 ELSE 0 END) AS new_followers
         FROM (
            SELECT DISTINCT owner_id, m, k, p FROM (
                SELECT owner_id,
                    CASE kind WHEN 'view' THEN 1 WHEN 'like' THEN 3 WHEN 'comment' THEN 4 ELSE 5 END AS m,
                    CASE WHEN kind IN ('like', 'follow') THEN user_id ELSE event_id END AS k,
                    CASE WHEN kind = 'like' THEN post_id END AS p
                FROM events
                WHERE {filter} AND owner_id IS NOT NULL AND kind IN ('view', 'like', 'comment', 'follow'){only}
                UNION ALL
                SELECT owner_id, 2 AS m, user_id AS k, NULL AS p
                FROM events
                WHERE {filter} AND owner_id IS NOT NULL AND kind = 'view'{only}
            ) AS keyed
         ) AS distinct_keys
         GROUP BY owner_id"
    )
}

/// Reports of the warehouse.
#[derive(Clone, Debug)]
pub struct Reports {
    pub warehouse: Warehouse,
    pub tz: Tz,
    pub tz_name: String,
    pub top_posts: usize,
    pub top_creators: usize,
}

impl Reports {
    pub fn day(&self, date: NaiveDate) -> Day {
        Day::new(self.tz, date)
    }

    /// Today in the service's time zone.
    pub fn today(&self) -> NaiveDate {
        Utc::now().with_timezone(&self.tz).date_naive()
    }

    /// Totals of every creator (or one) on a day.
    pub async fn totals(&self, day: &Day, owner: Option<&UserId>) -> anyhow::Result<HashMap<String, Totals>> {
        let batches = self.warehouse.query(&creator_sql(&day.filter, owner.map(|o| o.as_str()))).await?;
        let mut out = HashMap::new();
        for b in &batches {
            for r in 0..b.num_rows() {
                let Some(owner) = string_at(b.column(0).as_ref(), r) else { continue };
                out.insert(
                    owner,
                    Totals {
                        views: int_at(b.column(1).as_ref(), r),
                        unique_viewers: int_at(b.column(2).as_ref(), r),
                        likes: int_at(b.column(3).as_ref(), r),
                        comments: int_at(b.column(4).as_ref(), r),
                        new_followers: int_at(b.column(5).as_ref(), r),
                    },
                );
            }
        }
        Ok(out)
    }

    /// Each creator's most viewed posts of the day.
    async fn top_posts(&self, day: &Day, owner: Option<&UserId>) -> anyhow::Result<HashMap<String, Vec<TopPost>>> {
        let only = owner.map(|o| format!(" AND owner_id = {}", lit(o.as_str()))).unwrap_or_default();
        let sql = format!(
            // Same shape as `creator_sql`: de-duplicate once, then sum.
            "SELECT owner_id, post_id,
                SUM(CASE WHEN kind = 'view' THEN 1 ELSE 0 END) AS views,
                SUM(CASE WHEN kind = 'like' THEN 1 ELSE 0 END) AS likes,
                SUM(CASE WHEN kind = 'comment' THEN 1 ELSE 0 END) AS comments
             FROM (
                SELECT DISTINCT owner_id, post_id, kind,
                    CASE WHEN kind = 'like' THEN user_id ELSE event_id END AS k
                FROM events
                WHERE {} AND owner_id IS NOT NULL AND post_id IS NOT NULL AND kind IN ('view', 'like', 'comment'){only}
             ) AS distinct_keys
             GROUP BY owner_id, post_id",
            day.filter
        );
        let mut out: HashMap<String, Vec<TopPost>> = HashMap::new();
        for b in self.warehouse.query(&sql).await? {
            for r in 0..b.num_rows() {
                let (Some(owner), Some(post)) =
                    (string_at(b.column(0).as_ref(), r), string_at(b.column(1).as_ref(), r))
                else {
                    continue;
                };
                out.entry(owner).or_default().push(TopPost {
                    post_id: PostId::from_trusted(post),
                    views: int_at(b.column(2).as_ref(), r),
                    likes: int_at(b.column(3).as_ref(), r),
                    comments: int_at(b.column(4).as_ref(), r),
                });
            }
        }
        for posts in out.values_mut() {
            posts.sort_by(|a, b| {
                (b.views, b.likes, b.comments).cmp(&(a.views, a.likes, a.comments)).then(a.post_id.cmp(&b.post_id))
            });
            posts.truncate(self.top_posts);
        }
        Ok(out)
    }

    /// Views per local hour of each creator (or one).
    async fn hourly(&self, day: &Day, owner: Option<&UserId>) -> anyhow::Result<HashMap<String, Vec<u64>>> {
        let only = owner.map(|o| format!(" AND owner_id = {}", lit(o.as_str()))).unwrap_or_default();
        let sql = format!(
            "SELECT owner_id, (CAST(ts AS BIGINT) - {}) / 3600000 AS hour, COUNT(DISTINCT event_id) AS views
             FROM events WHERE {} AND kind = 'view' AND owner_id IS NOT NULL{only}
             GROUP BY owner_id, hour",
            day.start.timestamp_millis(),
            day.filter
        );
        let mut out: HashMap<String, Vec<u64>> = HashMap::new();
        for b in self.warehouse.query(&sql).await? {
            for r in 0..b.num_rows() {
                let Some(owner) = string_at(b.column(0).as_ref(), r) else { continue };
                let hour = int_at(b.column(1).as_ref(), r) as usize;
                let hours = out.entry(owner).or_insert_with(|| vec![0; day.hours]);
                if let Some(slot) = hours.get_mut(hour) {
                    *slot += int_at(b.column(2).as_ref(), r);
                }
            }
        }
        Ok(out)
    }

    /// Every creator's report of a day (creators with any activity).
    pub async fn creators(&self, date: NaiveDate, only: Option<&UserId>) -> anyhow::Result<Vec<CreatorReport>> {
        let day = self.day(date);
        let totals = self.totals(&day, only).await?;
        let mut top = self.top_posts(&day, only).await?;
        let mut hourly = self.hourly(&day, only).await?;
        let now = Utc::now();
        let mut reports: Vec<CreatorReport> = totals
            .into_iter()
            .map(|(owner, t)| CreatorReport {
                top_posts: top.remove(&owner).unwrap_or_default(),
                views_by_hour: hourly.remove(&owner).unwrap_or_else(|| vec![0; day.hours]),
                user_id: UserId::from_trusted(owner),
                date,
                time_zone: self.tz_name.clone(),
                views: t.views,
                unique_viewers: t.unique_viewers,
                likes: t.likes,
                comments: t.comments,
                new_followers: t.new_followers,
                complete: now >= day.end,
                generated_at: now,
            })
            .collect();
        reports.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(reports)
    }

    /// One creator's report of a day (zeros when nothing happened).
    pub async fn creator(&self, date: NaiveDate, user: &UserId) -> anyhow::Result<CreatorReport> {
        let day = self.day(date);
        Ok(self.creators(date, Some(user)).await?.into_iter().next().unwrap_or_else(|| CreatorReport {
            user_id: user.clone(),
            date,
            time_zone: self.tz_name.clone(),
            views: 0,
            unique_viewers: 0,
            likes: 0,
            comments: 0,
            new_followers: 0,
            top_posts: Vec::new(),
            views_by_hour: vec![0; day.hours],
            complete: Utc::now() >= day.end,
            generated_at: Utc::now(),
        }))
    }

    /// The platform report of a day.
    pub async fn platform(&self, date: NaiveDate) -> anyhow::Result<PlatformReport> {
        let day = self.day(date);
        let sql = format!(
            "SELECT
                COUNT(DISTINCT user_id) AS active_users,
                COUNT(DISTINCT CASE WHEN kind = 'signup' THEN user_id END) AS new_users,
                COUNT(DISTINCT CASE WHEN kind = 'post' THEN post_id END) AS posts,
                COUNT(DISTINCT CASE WHEN kind = 'view' THEN event_id END) AS views,
                COUNT(DISTINCT CASE WHEN kind = 'like' THEN concat(post_id, '|', user_id) END) AS likes,
                COUNT(DISTINCT CASE WHEN kind = 'comment' THEN event_id END) AS comments,
                COUNT(DISTINCT CASE WHEN kind = 'follow' THEN concat(user_id, '|', owner_id) END) AS follows
             FROM events WHERE {}",
            day.filter
        );
        let batches = self.warehouse.query(&sql).await?;
        let get =
            |i: usize| batches.iter().find(|b| b.num_rows() > 0).map(|b| int_at(b.column(i).as_ref(), 0)).unwrap_or(0);
        let (likes, comments) = (get(4), get(5));
        let mut creators: Vec<TopCreator> = self
            .totals(&day, None)
            .await?
            .into_iter()
            .map(|(owner, t)| TopCreator {
                user_id: UserId::from_trusted(owner),
                views: t.views,
                likes: t.likes,
                comments: t.comments,
                new_followers: t.new_followers,
            })
            .collect();
        creators.sort_by(|a, b| {
            (b.views, b.likes, b.comments).cmp(&(a.views, a.likes, a.comments)).then(a.user_id.cmp(&b.user_id))
        });
        creators.truncate(self.top_creators);
        let now = Utc::now();
        Ok(PlatformReport {
            date,
            time_zone: self.tz_name.clone(),
            active_users: get(0),
            new_users: get(1),
            posts: get(2),
            views: get(3),
            likes,
            comments,
            follows: get(6),
            interactions: likes + comments,
            top_creators: creators,
            complete: now >= day.end,
            generated_at: now,
        })
    }

    fn report_path(&self, date: NaiveDate, name: &str) -> Path {
        Path::from(format!("{}/reports/date={}/{name}.json", self.warehouse.prefix(), date.format("%Y-%m-%d")))
    }

    /// Stores a creator's report.
    pub async fn store_creator(&self, report: &CreatorReport) -> anyhow::Result<()> {
        let path = self.report_path(report.date, &format!("creator-{}", report.user_id));
        let body = serde_json::to_vec(report)?;
        self.warehouse.store().put(&path, PutPayload::from(body)).await.with_context(|| format!("storing {path}"))?;
        Ok(())
    }

    /// Stores the platform report.
    pub async fn store_platform(&self, report: &PlatformReport) -> anyhow::Result<()> {
        let path = self.report_path(report.date, "platform");
        let body = serde_json::to_vec(report)?;
        self.warehouse.store().put(&path, PutPayload::from(body)).await.with_context(|| format!("storing {path}"))?;
        Ok(())
    }

    async fn stored<T: serde::de::DeserializeOwned>(&self, path: Path) -> anyhow::Result<Option<T>> {
        match self.warehouse.store().get(&path).await {
            Ok(found) => {
                Ok(Some(serde_json::from_slice(&found.bytes().await?).with_context(|| format!("reading {path}"))?))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading {path}"))),
        }
    }

    /// A stored creator report.
    pub async fn stored_creator(&self, date: NaiveDate, user: &UserId) -> anyhow::Result<Option<CreatorReport>> {
        self.stored(self.report_path(date, &format!("creator-{user}"))).await
    }

    /// The stored platform report.
    pub async fn stored_platform(&self, date: NaiveDate) -> anyhow::Result<Option<PlatformReport>> {
        self.stored(self.report_path(date, "platform")).await
    }
}

/// A bar chart of views per hour, as PNG.
pub fn chart(values: &[u64]) -> anyhow::Result<Vec<u8>> {
    const W: u32 = 480;
    const H: u32 = 120;
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let n = values.len().max(1) as u32;
    let slot = W / n;
    for (i, &v) in values.iter().enumerate() {
        let height = ((v as f64 / max as f64) * f64::from(H - 10)).round() as u32;
        let x0 = i as u32 * slot + 1;
        for x in x0..(x0 + slot.saturating_sub(2)).min(W) {
            for y in (H - height)..H {
                img.put_pixel(x, y, Rgb([79, 70, 229]));
            }
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)?;
    Ok(out.into_inner())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A creator's report as an email job; its id says what it is, so it is sent once
/// however often the day's run is repeated.
pub fn creator_email(report: &CreatorReport) -> anyhow::Result<Envelope<SendEmail>> {
    let date = report.date.format("%Y-%m-%d").to_string();
    let text = format!(
        "Your day on Mosaic ({date}, {tz}):\n\n  views: {}\n  unique viewers: {}\n  likes: {}\n  comments: {}\n  new followers: {}\n{}",
        report.views,
        report.unique_viewers,
        report.likes,
        report.comments,
        report.new_followers,
        report
            .top_posts
            .iter()
            .map(|p| format!("\n  post {}: {} views, {} likes, {} comments", p.post_id, p.views, p.likes, p.comments))
            .collect::<String>(),
        tz = report.time_zone,
    );
    let rows = [
        ("Views", report.views),
        ("Unique viewers", report.unique_viewers),
        ("Likes", report.likes),
        ("Comments", report.comments),
        ("New followers", report.new_followers),
    ]
    .iter()
    .map(|(k, v)| {
        format!("<tr><td style=\"padding:4px 12px 4px 0\">{k}</td><td style=\"font-weight:600\">{v}</td></tr>")
    })
    .collect::<String>();
    let html = format!(
        "<p style=\"margin:0 0 12px 0\">Your day on Mosaic: {date} ({tz}).</p><table>{rows}</table>\
         <p style=\"margin:16px 0 4px 0\">Views by hour</p><img src=\"cid:chart\" width=\"480\" height=\"120\" alt=\"views by hour\">",
        tz = escape(&report.time_zone)
    );
    let png = chart(&report.views_by_hour)?;
    Ok(Envelope {
        id: EventId::from_trusted(format!("report-{date}-{}", report.user_id)),
        at: Utc::now(),
        data: SendEmail {
            recipient: report.user_id.clone(),
            kind: NotificationType::Report,
            subject_id: date.clone(),
            subject: format!("Your Mosaic day: {} views on {date}", report.views),
            text,
            html,
            images: vec![InlineImage {
                cid: "chart".into(),
                mime: "image/png".into(),
                base64: base64::engine::general_purpose::STANDARD.encode(png),
            }],
            inbox_text: Some(format!("Your report for {date} is ready")),
        },
    })
}

/// The platform report as an email job for one administrator.
pub fn platform_email(report: &PlatformReport, admin: &UserId) -> Envelope<SendEmail> {
    let date = report.date.format("%Y-%m-%d").to_string();
    let lines = [
        ("Active users", report.active_users),
        ("New users", report.new_users),
        ("Posts", report.posts),
        ("Views", report.views),
        ("Likes", report.likes),
        ("Comments", report.comments),
        ("Follows", report.follows),
    ];
    let text = lines.iter().map(|(k, v)| format!("  {k}: {v}\n")).collect::<String>()
        + &report
            .top_creators
            .iter()
            .map(|c| format!("\n  creator {}: {} views, {} likes", c.user_id, c.views, c.likes))
            .collect::<String>();
    let html = format!(
        "<p style=\"margin:0 0 12px 0\">Mosaic on {date} ({}).</p><table>{}</table>",
        escape(&report.time_zone),
        lines
            .iter()
            .map(|(k, v)| format!(
                "<tr><td style=\"padding:4px 12px 4px 0\">{k}</td><td style=\"font-weight:600\">{v}</td></tr>"
            ))
            .collect::<String>()
    );
    Envelope {
        id: EventId::from_trusted(format!("platform-{date}-{admin}")),
        at: Utc::now(),
        data: SendEmail {
            recipient: admin.clone(),
            kind: NotificationType::Report,
            subject_id: date.clone(),
            subject: format!("Mosaic platform report for {date}"),
            text: format!("Mosaic on {date} ({}):\n\n{text}", report.time_zone),
            html,
            images: Vec::new(),
            inbox_text: Some(format!("The platform report for {date} is ready")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_days_span_their_utc_partitions_and_hours() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let normal = Day::new(berlin, NaiveDate::from_ymd_opt(2026, 1, 15).unwrap());
        assert_eq!(normal.hours, 24);
        assert!(normal.filter.contains("'2026-01-14'") && normal.filter.contains("'2026-01-15'"));
        let spring = Day::new(berlin, NaiveDate::from_ymd_opt(2026, 3, 29).unwrap());
        assert_eq!(spring.hours, 23);
        let autumn = Day::new(berlin, NaiveDate::from_ymd_opt(2026, 10, 25).unwrap());
        assert_eq!(autumn.hours, 25);
        let utc = Day::new("UTC".parse().unwrap(), NaiveDate::from_ymd_opt(2026, 1, 15).unwrap());
        assert!(utc.filter.starts_with("date IN ('2026-01-15') "));
    }

    #[test]
    fn charts_are_pngs() {
        let png = chart(&[0, 3, 9, 1]).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        assert!(chart(&[]).is_ok());
    }
}
