//! NATS subject patterns, as components declare what they publish and subscribe to.

/// Whether `subject` matches `pattern` as NATS matches them: tokens split on `.`, `*` stands
/// for one token, `>` (last) for one or more.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for token in pattern.split('.') {
        match (token, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (t, Some(s)) if t == s => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

/// Pushes to one user's sockets (`push.user.<id>`), core NATS.
pub const USER_PUSHES: &str = "push.user.*";
/// Frames a user must not miss (`frames.user.<id>`), kept in `USER_FRAMES`.
pub const USER_FRAMES: &str = "frames.user.*";
/// Count changes of one post (`push.post.<id>`), to the sockets watching it.
pub const POST_PUSHES: &str = "push.post.*";
/// Messages parked by a consumer (`dlq.<stream>.<durable>`), kept in `DEAD_LETTERS`.
pub const DEAD_LETTERS: &str = "dlq.>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_nats_matches_them() {
        assert!(matches("push.user.*", "push.user.u1"));
        assert!(!matches("push.user.*", "push.user.u1.x"));
        assert!(!matches("push.user.*", "push.user"));
        assert!(matches("dlq.>", "dlq.EVENTS_USER.feed-graph"));
        assert!(!matches("dlq.>", "dlq"));
        assert!(matches("events.user.followed", "events.user.followed"));
        assert!(!matches("events.user.followed", "events.user.followed2"));
        assert!(!matches("events.user.followed", "events.user"));
        assert!(matches(
            USER_PUSHES,
            &crate::ws::push_subject(&<crate::UserId as crate::Id>::from_trusted("u1".into()))
        ));
    }
}
