//! Accounts: creating them, profile edits, suspension and the post counter.

use super::user_rid;
use mosaic_api::{Id as _, PostId, UserId};
use mosaic_mesh::outbox::Outbox;
use mosaic_mesh::write::Write;
use surrealdb::types::{RecordId, SurrealValue};

/// Creates the account `$uid` (`$username`, `$email`, `$hash`, `$display_name`, `$role`),
/// its first session `$sid` and that session's refresh token `$rid` (expiring at
/// `$expires`), and inserts `$events`. Throws nothing; a username or email taken meanwhile
/// fails on the unique indexes.
pub(crate) const SIGNUP: &str = "BEGIN TRANSACTION;
     CREATE $uid SET username = $username, email = $email, password_hash = $hash,
        display_name = $display_name, bio = '', role = $role, topics = [],
        followers = 0, following = 0, posts = 0, suspended = false,
        created_at = time::now(), password_changed_at = time::now();
     CREATE $sid SET user = $uid, created_at = time::now(), last_used_at = time::now(), revoked = false;
     CREATE $rid SET session = $sid, user = $uid, used = false, created_at = time::now(), expires_at = $expires;
     INSERT INTO outbox $events;
     COMMIT TRANSACTION;";

/// A profile edit: the fields to set, `None` for those left alone.
#[derive(Debug, Default)]
pub(crate) struct ProfileEdit {
    pub display_name: Option<String>,
    pub bio: Option<String>,
    pub topics: Option<Vec<String>>,
}

/// Sets the fields `edit` gives on `user`'s record and inserts `$events`, in one
/// transaction; `None` when it gives none. Throws nothing.
pub(crate) fn edit_profile<'a>(outbox: &'a Outbox, user: &UserId, edit: ProfileEdit) -> Option<Write<'a>> {
    let mut sets = Vec::new();
    if edit.display_name.is_some() {
        sets.push("display_name = $display_name");
    }
    if edit.bio.is_some() {
        sets.push("bio = $bio");
    }
    if edit.topics.is_some() {
        sets.push("topics = $topics");
    }
    if sets.is_empty() {
        return None;
    }
    let sql = format!(
        "BEGIN TRANSACTION; UPDATE $uid SET {}; INSERT INTO outbox $events; COMMIT TRANSACTION;",
        sets.join(", ")
    );
    Some(
        outbox
            .write(sql)
            .bind("uid", user_rid(user))
            .bind("display_name", edit.display_name.unwrap_or_default())
            .bind("bio", edit.bio.unwrap_or_default())
            .bind("topics", edit.topics.unwrap_or_default()),
    )
}

/// Suspends `$uid`, ends every live session of theirs and inserts `$events`. Throws nothing.
pub(crate) const SUSPEND: &str = "BEGIN TRANSACTION;
     UPDATE $uid SET suspended = true;
     UPDATE session SET revoked = true, revoked_reason = 'suspended' WHERE user = $uid AND revoked = false;
     INSERT INTO outbox $events;
     COMMIT TRANSACTION;";

/// Lifts the suspension of `$uid` and inserts `$events`, if `$uid` is suspended. Throws
/// nothing.
pub(crate) const UNSUSPEND: &str = "BEGIN TRANSACTION;
     IF (SELECT VALUE suspended FROM ONLY $uid) == true {
        UPDATE $uid SET suspended = false;
        INSERT INTO outbox $events;
     };
     COMMIT TRANSACTION;";

/// One post event as [`COUNT_POSTS`] takes it.
#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct Counted {
    post: RecordId,
    user: RecordId,
    created: bool,
}

impl Counted {
    /// `post` of `author` was created (`created`) or deleted.
    pub(crate) fn new(post: &PostId, author: &UserId, created: bool) -> Self {
        Self { post: RecordId::new("counted_post", post.as_str()), user: user_rid(author), created }
    }
}

/// Counts the posts `$events` (a list of [`Counted`], no outbox: bound like any other value)
/// in delivery order: a created post not recorded yet is recorded and counted, a deleted one
/// that is recorded is forgotten and uncounted. Throws nothing.
pub(crate) const COUNT_POSTS: &str = "BEGIN TRANSACTION;
     FOR $e IN $events {
        IF $e.created {
            IF !record::exists($e.post) AND record::exists($e.user) {
                CREATE $e.post SET author = $e.user;
                UPDATE $e.user SET posts += 1;
            };
        } ELSE IF record::exists($e.post) {
            DELETE $e.post;
            UPDATE $e.user SET posts -= 1;
        };
     };
     COMMIT TRANSACTION;";
