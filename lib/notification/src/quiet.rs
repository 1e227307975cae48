//! Quiet hours in the user's own time zone.
//!
//! Wall-clock times are turned into instants with the zone's rules for that day, so a window
//! still ends at 07:00 local time after a daylight-saving change, and a day with a 23- or
//! 25-hour length is handled: a local time that does not exist that day (the spring-forward
//! gap) is taken at the offset before the change, and one that exists twice (fall-back)
//! at its first occurrence.

use chrono::{DateTime, NaiveTime, Utc};
use mosaic_api::ApiError;
use mosaic_api::notification::QuietHours;
use mosaic_mesh::clock::{Tz, next_occurrence};

/// Parsed quiet hours.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    start: NaiveTime,
    end: NaiveTime,
    tz: Tz,
}

fn parse_time(s: &str, field: &str) -> Result<NaiveTime, ApiError> {
    NaiveTime::parse_from_str(s, "%H:%M")
        .map_err(|_| ApiError::validation(format!("quiet_hours.{field} must be HH:MM (24 h), not {s:?}")))
}

impl Window {
    /// Validates quiet hours as a client sent them.
    pub fn parse(q: &QuietHours) -> Result<Self, ApiError> {
        let start = parse_time(&q.start, "start")?;
        let end = parse_time(&q.end, "end")?;
        if start == end {
            return Err(ApiError::validation("quiet_hours.start and quiet_hours.end must differ"));
        }
        let tz: Tz = q.time_zone.parse().map_err(|_| {
            ApiError::validation(format!("quiet_hours.time_zone {:?} is not an IANA time zone", q.time_zone))
        })?;
        Ok(Self { start, end, tz })
    }

    /// When the window ends, if `now` is inside it.
    pub fn hold_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.tz).time();
        let inside = if self.start < self.end {
            local >= self.start && local < self.end
        } else {
            local >= self.start || local < self.end
        };
        inside.then(|| next_occurrence(self.tz, self.end, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, NaiveDate};
    use mosaic_mesh::clock::{at_local, day_bounds};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn window(start: &str, end: &str, tz: &str) -> Window {
        Window::parse(&QuietHours { start: start.into(), end: end.into(), time_zone: tz.into() }).unwrap()
    }

    #[test]
    fn a_window_across_midnight_holds_until_its_local_end() {
        let w = window("22:00", "07:00", "Europe/Berlin");
        // 23:30 in Berlin (CET, +1) on a normal winter day.
        assert_eq!(w.hold_until(utc("2026-01-15T22:30:00Z")), Some(utc("2026-01-16T06:00:00Z")));
        // 12:00 local: not quiet.
        assert_eq!(w.hold_until(utc("2026-01-15T11:00:00Z")), None);
        // 06:59 local: still quiet, ends a minute later.
        assert_eq!(w.hold_until(utc("2026-01-16T05:59:00Z")), Some(utc("2026-01-16T06:00:00Z")));
    }

    #[test]
    fn the_end_follows_daylight_saving_changes() {
        let w = window("22:00", "07:00", "Europe/Berlin");
        // Night of 28–29 March 2026: clocks jump from 02:00 to 03:00; 07:00 is CEST (+2).
        assert_eq!(w.hold_until(utc("2026-03-28T22:00:00Z")), Some(utc("2026-03-29T05:00:00Z")));
        // Night of 24–25 October 2026: clocks fall back; 07:00 is CET (+1) again.
        assert_eq!(w.hold_until(utc("2026-10-24T21:00:00Z")), Some(utc("2026-10-25T06:00:00Z")));
    }

    #[test]
    fn local_times_in_the_gap_or_the_overlap_are_placed_once() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let spring = NaiveDate::from_ymd_opt(2026, 3, 29).unwrap();
        // 02:30 does not exist that day; it is read at the winter offset (= 03:30 CEST).
        assert_eq!(at_local(berlin, spring, NaiveTime::from_hms_opt(2, 30, 0).unwrap()), utc("2026-03-29T01:30:00Z"));
        let autumn = NaiveDate::from_ymd_opt(2026, 10, 25).unwrap();
        // 02:30 happens twice; the first one counts.
        assert_eq!(at_local(berlin, autumn, NaiveTime::from_hms_opt(2, 30, 0).unwrap()), utc("2026-10-25T00:30:00Z"));
        let (a, b) = day_bounds(berlin, spring);
        assert_eq!(b - a, Duration::hours(23));
        let (a, b) = day_bounds(berlin, autumn);
        assert_eq!(b - a, Duration::hours(25));
    }

    #[test]
    fn bad_quiet_hours_are_refused_with_the_field_named() {
        let bad = |s: &str, e: &str, tz: &str| {
            Window::parse(&QuietHours { start: s.into(), end: e.into(), time_zone: tz.into() }).unwrap_err().detail
        };
        assert!(bad("25:00", "07:00", "UTC").contains("start"));
        assert!(bad("22:00", "7", "UTC").contains("end"));
        assert!(bad("22:00", "07:00", "Mars/Olympus").contains("time_zone"));
        assert!(bad("07:00", "07:00", "UTC").contains("differ"));
    }
}
