//! Wall-clock time in a time zone, for schedules users and operators set in local time
//! (quiet hours, daily reports): turned into instants with the zone's rules for that day,
//! so daylight-saving days (23 or 25 hours long) come out right. A local time that does not
//! exist that day (the spring-forward gap) is read at the offset before the change; one
//! that exists twice (fall-back) at its first occurrence.

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveTime, Offset as _, TimeZone, Utc};
pub use chrono_tz::Tz;

/// The instant `at` local wall-clock time next occurs in `tz` strictly after `after`.
pub fn next_occurrence(tz: Tz, at: NaiveTime, after: DateTime<Utc>) -> DateTime<Utc> {
    let mut day = after.with_timezone(&tz).date_naive();
    loop {
        let instant = at_local(tz, day, at);
        if instant > after {
            return instant;
        }
        day = day.succ_opt().expect("dates this far out exist");
    }
}

/// `time` on `day` in `tz` as an instant.
pub fn at_local(tz: Tz, day: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    let naive = day.and_time(time);
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // In the gap: use the offset in force just before it.
            let before = tz.from_local_datetime(&(naive - Duration::hours(3))).earliest().expect("3 h earlier exists");
            let offset = before.offset().fix();
            (naive - offset).and_utc()
        }
    }
}

/// Start and end of a local calendar day in `tz` as instants (23 or 25 hours apart on
/// daylight-saving days).
pub fn day_bounds(tz: Tz, day: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let start = at_local(tz, day, NaiveTime::MIN);
    let end = at_local(tz, day.succ_opt().expect("dates this far out exist"), NaiveTime::MIN);
    (start, end)
}
