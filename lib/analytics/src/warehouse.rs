//! The warehouse: events as Parquet files in the object store, partitioned by event date
//! (`<prefix>/events/date=YYYY-MM-DD/<uuidv7>.parquet`, the date of the event's own time in
//! UTC, so late events land in their day), queried with SQL through DataFusion straight
//! from the store.
//!
//! Plain hive-partitioned Parquet is what BigQuery external tables, Athena and Spark read
//! unchanged, so a deployment can outgrow one machine without migrating data.
//!
//! Delivery is at least once, so the same event may be written twice (a crash between a
//! write and its acknowledgement); every count is over distinct event ids, and compaction
//! also drops the duplicates it finds.

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
pub use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder, TimestampMillisecondBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext, col};
use futures::TryStreamExt as _;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The URL the warehouse's store is registered under in DataFusion.
const STORE_URL: &str = "mosaic://warehouse";
/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 256 * 1024;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    View,
    Like,
    Unlike,
    Comment,
    CommentDeleted,
    Follow,
    Unfollow,
    Post,
    PostDeleted,
    Signup,
}

impl Kind {
    /// The name stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Like => "like",
            Kind::Unlike => "unlike",
            Kind::Comment => "comment",
            Kind::CommentDeleted => "comment_deleted",
            Kind::Follow => "follow",
            Kind::Unfollow => "unfollow",
            Kind::Post => "post",
            Kind::PostDeleted => "post_deleted",
            Kind::Signup => "signup",
        }
    }
}

/// One row of the warehouse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event's id (its JetStream `Nats-Msg-Id`): counts are over distinct ids.
    pub event_id: String,
    pub at: DateTime<Utc>,
    pub kind: Kind,
    /// Who acted: the viewer, liker, commenter, follower, author, new user.
    pub user_id: String,
    /// Whose content or account it concerns (the post's author, the followee), if anyone's.
    pub owner_id: Option<String>,
    pub post_id: Option<String>,
}

/// The columns of the event files (`date` is in the path, not the file).
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("owner_id", DataType::Utf8, true),
        Field::new("post_id", DataType::Utf8, true),
    ]))
}

/// Events as one Arrow batch.
pub fn to_batch(events: &[Event]) -> anyhow::Result<RecordBatch> {
    let n = events.len();
    let mut id = StringBuilder::with_capacity(n, n * 32);
    let mut ts = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut kind = StringBuilder::with_capacity(n, n * 6);
    let mut user = StringBuilder::with_capacity(n, n * 32);
    let mut owner = StringBuilder::with_capacity(n, n * 32);
    let mut post = StringBuilder::with_capacity(n, n * 32);
    for e in events {
        id.append_value(&e.event_id);
        ts.append_value(e.at.timestamp_millis());
        kind.append_value(e.kind.as_str());
        user.append_value(&e.user_id);
        owner.append_option(e.owner_id.as_deref());
        post.append_option(e.post_id.as_deref());
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(ts.finish()),
        Arc::new(kind.finish()),
        Arc::new(user.finish()),
        Arc::new(owner.finish()),
        Arc::new(post.finish()),
    ];
    Ok(RecordBatch::try_new(schema(), columns)?)
}

fn writer_properties() -> anyhow::Result<WriterProperties> {
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build())
}

/// The event warehouse.
#[derive(Clone)]
pub struct Warehouse {
    store: Arc<dyn ObjectStore>,
    ctx: SessionContext,
    prefix: String,
}

impl std::fmt::Debug for Warehouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Warehouse").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl Warehouse {
    /// The warehouse under `prefix` in `store`, with the `events` table registered.
    pub async fn open(store: Arc<dyn ObjectStore>, prefix: &str) -> anyhow::Result<Self> {
        // Files come and go outside DataFusion (writes, compaction): list afresh each query.
        let runtime = RuntimeEnvBuilder::new().with_object_list_cache_limit(0).build_arc()?;
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let config = SessionConfig::new()
            .with_target_partitions(threads)
            .set_bool("datafusion.execution.parquet.schema_force_view_types", false);
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        ctx.register_object_store(ObjectStoreUrl::parse(STORE_URL)?.as_ref(), store.clone());
        let prefix = prefix.trim_matches('/').to_owned();
        let options = ListingOptions::new(Arc::new(ParquetFormat::default().with_force_view_types(false)))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![("date".to_owned(), DataType::Utf8)]);
        ctx.register_listing_table("events", format!("{STORE_URL}/{prefix}/events/"), options, Some(schema()), None)
            .await
            .context("registering the events table")?;
        Ok(Self { store, ctx, prefix })
    }

    /// The object store (reports live beside the events).
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The path prefix of the warehouse in the store.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn partition(&self, date: NaiveDate) -> Path {
        Path::from(format!("{}/events/date={}", self.prefix, date.format("%Y-%m-%d")))
    }

    /// Writes events, one file per event date present; returns the files written.
    pub async fn write(&self, events: &[Event]) -> anyhow::Result<Vec<Path>> {
        let mut by_date: BTreeMap<NaiveDate, Vec<Event>> = BTreeMap::new();
        for e in events {
            by_date.entry(e.at.date_naive()).or_default().push(e.clone());
        }
        let mut written = Vec::with_capacity(by_date.len());
        for (date, rows) in by_date {
            let path = self.partition(date).join(format!("{}.parquet", uuid::Uuid::now_v7().simple()));
            self.write_file(&path, &[to_batch(&rows)?]).await?;
            written.push(path);
        }
        Ok(written)
    }

    async fn write_file(&self, path: &Path, batches: &[RecordBatch]) -> anyhow::Result<()> {
        let sink = BufWriter::new(self.store.clone(), path.clone());
        let mut writer = AsyncArrowWriter::try_new(sink, schema(), Some(writer_properties()?))?;
        for batch in batches {
            writer.write(batch).await.with_context(|| format!("writing {path}"))?;
        }
        // The object appears only once the footer is written and the upload completes.
        writer.close().await.with_context(|| format!("finishing {path}"))?;
        Ok(())
    }

    /// The event files of one day.
    pub async fn files(&self, date: NaiveDate) -> anyhow::Result<Vec<Path>> {
        let prefix = self.partition(date);
        let mut files: Vec<Path> = self
            .store
            .list(Some(&prefix))
            .try_filter(|m| std::future::ready(m.location.as_ref().ends_with(".parquet")))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .with_context(|| format!("listing {prefix}"))?;
        files.sort();
        Ok(files)
    }

    /// The days that have event files.
    pub async fn dates(&self) -> anyhow::Result<Vec<NaiveDate>> {
        let root = Path::from(format!("{}/events", self.prefix));
        let listing = self.store.list_with_delimiter(Some(&root)).await.context("listing partitions")?;
        let mut dates: Vec<NaiveDate> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| {
                p.filename()?.strip_prefix("date=").and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            })
            .collect();
        dates.sort();
        Ok(dates)
    }

    /// Rewrites a day's files as one, without duplicate events; returns how many files it
    /// replaced (0 when there was nothing to do). Files written meanwhile are left for the
    /// next round. A query running meanwhile may see both the new file and the old ones
    /// (counts are over distinct ids, so it counts right) or find an old one gone (queries
    /// are retried once).
    pub async fn compact(&self, date: NaiveDate, min_files: usize) -> anyhow::Result<usize> {
        let inputs = self.files(date).await?;
        if inputs.len() < min_files.max(2) {
            return Ok(0);
        }
        let urls: Vec<String> = inputs.iter().map(|p| format!("{STORE_URL}/{p}")).collect();
        let schema = schema();
        let frame = self
            .ctx
            .read_parquet(urls, ParquetReadOptions::default().schema(&schema))
            .await?
            .distinct()?
            .sort(vec![col("ts").sort(true, false)])?;
        let batches = frame.collect().await.context("reading the files to compact")?;
        let output = self.partition(date).join(format!("c-{}.parquet", uuid::Uuid::now_v7().simple()));
        self.write_file(&output, &batches).await?;
        for path in &inputs {
            self.store.delete(path).await.with_context(|| format!("deleting compacted {path}"))?;
        }
        tracing::info!(%date, files = inputs.len(), rows = batches.iter().map(|b| b.num_rows()).sum::<usize>(), "compacted");
        Ok(inputs.len())
    }

    /// Runs SQL over the `events` table. A file deleted under the query (compaction) makes
    /// it fail; it is retried once.
    pub async fn query(&self, sql: &str) -> anyhow::Result<Vec<RecordBatch>> {
        let batches = match self.run(sql).await {
            Err(e) if vanished(&e) => {
                tracing::debug!(error = %e, "a file vanished under a query; retrying");
                self.run(sql).await
            }
            done => done,
        };
        batches.context("querying the warehouse")
    }

    async fn run(&self, sql: &str) -> Result<Vec<RecordBatch>, DataFusionError> {
        self.ctx.sql(sql).await?.collect().await
    }
}

/// Whether `e` comes from a file that is gone: the object store or the file system said
/// "not found" somewhere down its chain of causes.
fn vanished(e: &DataFusionError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        let store_miss = matches!(c.downcast_ref::<object_store::Error>(), Some(object_store::Error::NotFound { .. }));
        let file_miss = c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound);
        if store_miss || file_miss {
            return true;
        }
        cause = c.source();
    }
    false
}

/// A string cell, whatever string layout the engine chose.
pub fn string_at(column: &dyn Array, row: usize) -> Option<String> {
    if column.is_null(row) {
        return None;
    }
    Some(match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().value(row).to_owned(),
        DataType::LargeUtf8 => column.as_string::<i64>().value(row).to_owned(),
        DataType::Utf8View => column.as_string_view().value(row).to_owned(),
        _ => datafusion::arrow::util::display::array_value_to_string(column, row).ok()?,
    })
}

/// An integer cell (counts come back as Int64).
pub fn int_at(column: &dyn Array, row: usize) -> u64 {
    if column.is_null(row) {
        return 0;
    }
    match column.data_type() {
        DataType::Int64 => column.as_primitive::<Int64Type>().value(row).max(0) as u64,
        _ => datafusion::arrow::util::display::array_value_to_string(column, row)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    }
}

/// A validated SQL string literal (ids and dates only ever come from our own types, but the
/// quoting is done here once anyway).
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[test]
    fn a_missing_file_is_told_apart_from_other_failures() {
        let gone = || object_store::Error::NotFound {
            path: "events/date=2026-01-01/a.parquet".into(),
            source: "no such object".into(),
        };
        assert!(vanished(&DataFusionError::ObjectStore(Box::new(gone()))));
        let wrapped =
            DataFusionError::Context("scanning".into(), Box::new(DataFusionError::ObjectStore(Box::new(gone()))));
        assert!(vanished(&wrapped));
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "a.parquet");
        assert!(vanished(&DataFusionError::External(Box::new(io))));
        assert!(!vanished(&DataFusionError::Plan("no column named views".into())));
        let denied = object_store::Error::PermissionDenied { path: "x".into(), source: "denied".into() };
        assert!(!vanished(&DataFusionError::ObjectStore(Box::new(denied))));
    }

    fn event(id: &str, at: &str, kind: Kind, user: &str, owner: Option<&str>, post: Option<&str>) -> Event {
        Event {
            event_id: id.into(),
            at: DateTime::parse_from_rfc3339(at).unwrap().with_timezone(&Utc),
            kind,
            user_id: user.into(),
            owner_id: owner.map(Into::into),
            post_id: post.map(Into::into),
        }
    }

    #[tokio::test]
    async fn events_land_in_their_days_and_compaction_drops_duplicates() {
        let w = Warehouse::open(Arc::new(InMemory::new()), "analytics").await.unwrap();
        let a = event("e1", "2026-03-01T23:59:59Z", Kind::View, "u1", Some("o"), Some("p"));
        let b = event("e2", "2026-03-02T00:00:01Z", Kind::View, "u2", Some("o"), Some("p"));
        w.write(&[a.clone(), b.clone()]).await.unwrap();
        // A redelivery writes e1 again, in a file of its own.
        w.write(std::slice::from_ref(&a)).await.unwrap();
        let day1 = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
        assert_eq!(w.files(day1).await.unwrap().len(), 2);
        assert_eq!(w.dates().await.unwrap().len(), 2);
        let count = |sql: &str| {
            let w = w.clone();
            let sql = sql.to_owned();
            async move {
                let b = w.query(&sql).await.unwrap();
                int_at(b[0].column(0).as_ref(), 0)
            }
        };
        assert_eq!(count("SELECT COUNT(*) FROM events WHERE date = '2026-03-01'").await, 2);
        assert_eq!(count("SELECT COUNT(DISTINCT event_id) FROM events WHERE date = '2026-03-01'").await, 1);
        assert_eq!(w.compact(day1, 2).await.unwrap(), 2);
        assert_eq!(w.files(day1).await.unwrap().len(), 1);
        assert_eq!(count("SELECT COUNT(*) FROM events WHERE date = '2026-03-01'").await, 1);
        assert_eq!(count("SELECT COUNT(*) FROM events").await, 2);
    }
}
