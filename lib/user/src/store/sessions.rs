//! Sessions and their refresh tokens: `session` and `refresh_token` records.

use super::{Db, first};
use chrono::{DateTime, Utc};
use surrealdb::types::{RecordId, SurrealValue};

mosaic_mesh::refusals! {
    /// Why a session transaction refuses.
    pub(crate) enum Refused {
        /// The account was suspended after it was read.
        Suspended = "account_suspended",
        /// A concurrent refresh spent the token first.
        RefreshTokenReused = "refresh_token_reused",
    }
}

/// A new session of `$uid` (`$sid`) and its first refresh token (`$rid`, expiring at
/// `$expires`). Throws `account_suspended` if `$uid` is suspended: the suspension check is
/// repeated inside the transaction, so a suspension committed between the login's read and
/// this write conflicts with it instead of slipping by.
pub(crate) const OPEN: &str = "BEGIN TRANSACTION;
     IF (SELECT VALUE suspended FROM ONLY $uid) == true { THROW 'account_suspended'; };
     CREATE $sid SET user = $uid, created_at = time::now(), last_used_at = time::now(), revoked = false;
     CREATE $rid SET session = $sid, user = $uid, used = false, created_at = time::now(), expires_at = $expires;
     COMMIT TRANSACTION;";

/// Spends the refresh token `$old` and mints `$new` for the session `$sid` of `$uid`
/// (expiring at `$expires`). Spending and minting is one transaction that only succeeds if
/// the old token was still unspent: of two concurrent refreshes with the same token, one wins
/// and the other throws `refresh_token_reused` (or conflicts).
pub(crate) const ROTATE: &str = "BEGIN TRANSACTION;
     LET $spent = (UPDATE $old SET used = true WHERE used = false RETURN AFTER);
     IF array::len($spent) == 0 { THROW 'refresh_token_reused'; };
     CREATE $new SET session = $sid, user = $uid, used = false, created_at = time::now(), expires_at = $expires;
     UPDATE $sid SET last_used_at = time::now();
     COMMIT TRANSACTION;";

/// Sets the password hash of `$uid` to `$hash` and ends every other session of theirs (all
/// but `$keep`, which may be `NONE`). Throws nothing.
pub(crate) const CHANGE_PASSWORD: &str = "BEGIN TRANSACTION;
     UPDATE $uid SET password_hash = $hash, password_changed_at = time::now();
     UPDATE session SET revoked = true, revoked_reason = 'password changed'
        WHERE user = $uid AND revoked = false AND id != $keep;
     COMMIT TRANSACTION;";

/// Ends the sessions `$rids` that are still live, for `$reason`. Throws nothing.
pub(crate) const REVOKE: &str = "UPDATE $rids SET revoked = true, revoked_reason = $reason WHERE revoked = false";

/// A refresh token with what the refresh needs of its session.
#[derive(Debug, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub(crate) struct TokenRow {
    pub session: String,
    pub user: String,
    pub used: bool,
    pub revoked: bool,
    pub expires_at: DateTime<Utc>,
}

/// The refresh token stored under `hash`, if any.
pub(crate) async fn refresh_token(db: &Db, hash: &str) -> anyhow::Result<Option<TokenRow>> {
    let query = db
        .query(
            "SELECT record::id(session) AS session, record::id(user) AS user, used, expires_at,
                    session.revoked AS revoked
             FROM $rid",
        )
        .bind(("rid", RecordId::new("refresh_token", hash)));
    first(query, "reading refresh token").await
}
