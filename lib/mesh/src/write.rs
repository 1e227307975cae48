//! One write path: a SurrealDB transaction that changes state and stages the events it
//! implies, retried on conflict, with the refusals it `THROW`s read back as a typed enum.
//!
//! ```text
//! self.outbox
//!     .write("BEGIN TRANSACTION; ... IF $taken { THROW 'media_taken' }; ... INSERT INTO outbox $events; COMMIT TRANSACTION;")
//!     .bind("post", post_rid)
//!     .stage(events)                    // bound as $events, handed to the relay on commit
//!     .run::<Refused>()                 // Err(WriteError::Refused(Refused::MediaTaken)) ...
//!     .await
//! ```
//!
//! A statement's `THROW 'code'` is how a transaction refuses (a taken name, a moved
//! sequence, a non-member); each service lists its codes once, with [`refusals!`], and
//! matches on the enum. Nothing reads a database error's text except [`thrown`], which
//! takes off the engine's fixed prefix (pinned by a test) and compares the rest whole.
//!
//! The `INSERT INTO outbox $events` stays in the SQL, where the transaction decides
//! whether the events happen (an idempotent repeat inserts none). After the commit the
//! staged rows go to the relay: [`Write::stage`] hands over the rows the transaction may
//! have inserted, [`Write::stage_inserted`] rows it inserted unconditionally (published
//! without reading them back), and [`Write::dispatch`] publishes them before returning
//! (chat, where a message's frame should not wait for the relay).

use crate::db::{Checked as _, Db, retry_conflicts};
use crate::outbox::{Outbox, Staged};
use std::borrow::Cow;
use surrealdb::types::{SurrealValue, Value};

/// What the engine puts before a thrown value in the error's message.
const THROWN_PREFIX: &str = "An error occurred: ";

/// The code a transaction `THROW`s, if `err` is such a refusal.
pub fn thrown(err: &surrealdb::Error) -> Option<&str> {
    if !err.is_thrown() {
        return None;
    }
    let message = err.message();
    Some(message.strip_prefix(THROWN_PREFIX).unwrap_or(message))
}

/// The refusals one service's transactions `THROW`, declared with [`refusals!`].
pub trait Refusal: Sized + std::fmt::Debug + Send + Sync + 'static {
    /// The refusal a thrown code stands for.
    fn from_code(code: &str) -> Option<Self>;
}

/// For writes that refuse nothing: any thrown value is a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRefusal {}

impl Refusal for NoRefusal {
    fn from_code(_: &str) -> Option<Self> {
        None
    }
}

/// Declares a service's refusals: an enum whose variants stand for the codes its SurrealQL
/// `THROW`s.
///
/// ```
/// mosaic_mesh::refusals! {
///     /// Why a send is refused.
///     pub enum SendRefused {
///         /// The sender left the conversation.
///         NotMember = "not_member",
///     }
/// }
/// use mosaic_mesh::write::Refusal as _;
/// assert_eq!(SendRefused::from_code("not_member"), Some(SendRefused::NotMember));
/// assert_eq!(SendRefused::NotMember.code(), "not_member");
/// assert_eq!(SendRefused::from_code("not_member_either"), None);
/// ```
#[macro_export]
macro_rules! refusals {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $code:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name { $($(#[$vmeta])* $variant),+ }

        impl $crate::write::Refusal for $name {
            fn from_code(code: &str) -> Option<Self> {
                match code {
                    $($code => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl $name {
            /// The code the SurrealQL `THROW`s.
            #[allow(dead_code)]
            $vis const fn code(self) -> &'static str {
                match self {
                    $(Self::$variant => $code),+
                }
            }
        }
    };
}

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError<R: Refusal> {
    /// The transaction refused, as the service's rules say it must.
    #[error("refused: {0:?}")]
    Refused(R),
    /// The database failed (conflicts that outlasted the retries included).
    #[error(transparent)]
    Failed(#[from] surrealdb::Error),
}

/// What happens to staged rows after the commit.
enum Hand {
    Committed,
    Inserted,
    Dispatch,
}

/// A write being described; see the module docs.
#[must_use = "a write does nothing until it is run"]
pub struct Write<'a> {
    db: &'a Db,
    sql: Cow<'a, str>,
    binds: Vec<(String, Value)>,
    outbox: Option<&'a Outbox>,
    staged: Vec<Staged>,
    hand: Hand,
    retry: bool,
}

impl<'a> Write<'a> {
    /// A transaction on `db` that stages no events (use [`Outbox::write`] for one that does).
    pub fn new(db: &'a Db, sql: impl Into<Cow<'a, str>>) -> Self {
        Self {
            db,
            sql: sql.into(),
            binds: Vec::new(),
            outbox: None,
            staged: Vec::new(),
            hand: Hand::Committed,
            retry: true,
        }
    }

    pub(crate) fn outbox(mut self, outbox: &'a Outbox) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Binds `$key` to `value`.
    pub fn bind(mut self, key: &str, value: impl SurrealValue) -> Self {
        self.binds.push((key.to_owned(), value.into_value()));
        self
    }

    /// Binds `$events` to `events`, handed to the relay once committed (the transaction may
    /// or may not have inserted them).
    pub fn stage(mut self, events: Vec<Staged>) -> Self {
        self.staged = events;
        self.hand = Hand::Committed;
        self
    }

    /// [`Write::stage`] for rows the transaction inserts whatever happens.
    pub fn stage_inserted(mut self, events: Vec<Staged>) -> Self {
        self.staged = events;
        self.hand = Hand::Inserted;
        self
    }

    /// [`Write::stage`], published before [`Write::run`] returns.
    pub fn dispatch(mut self, events: Vec<Staged>) -> Self {
        self.staged = events;
        self.hand = Hand::Dispatch;
        self
    }

    /// Runs the transaction once: a conflict comes back as a failure (see
    /// [`crate::db::is_conflict`]), for a caller that must read its inputs again before
    /// retrying (a chat send re-reads the conversation's sequence number).
    pub fn once(mut self) -> Self {
        self.retry = false;
        self
    }

    /// Runs the transaction, again while it conflicts with a concurrent one; on success
    /// hands the staged events over and returns the statements' results.
    pub async fn run<R: Refusal>(self) -> Result<surrealdb::IndexedResults, WriteError<R>> {
        let attempt = || async {
            let mut query = self.db.query(self.sql.as_ref());
            for (key, value) in &self.binds {
                query = query.bind((key.clone(), value.clone()));
            }
            // Without an outbox (a tool that runs no relay), staged rows wait in the table
            // for the sweep of a running service's relay.
            if self.outbox.is_some() || !self.staged.is_empty() {
                query = query.bind(("events", self.staged.clone()));
            }
            query.await?.checked()
        };
        let outcome = if self.retry { retry_conflicts(attempt).await } else { attempt().await };
        let results = match outcome {
            Ok(results) => results,
            Err(e) => {
                return Err(match thrown(&e).and_then(R::from_code) {
                    Some(refused) => WriteError::Refused(refused),
                    None => WriteError::Failed(e),
                });
            }
        };
        if let Some(outbox) = self.outbox {
            match self.hand {
                Hand::Committed => outbox.committed(&self.staged),
                Hand::Inserted => outbox.inserted(&self.staged),
                Hand::Dispatch => outbox.dispatch(&self.staged).await,
            }
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::DbConfig;

    crate::refusals! {
        enum Refused {
            Taken = "taken",
        }
    }

    async fn db() -> Db {
        crate::db::connect(&DbConfig { url: "mem://".into(), ..Default::default() }, "write").await.unwrap()
    }

    #[tokio::test]
    async fn a_thrown_code_comes_back_as_its_refusal_and_the_transaction_is_undone() {
        let db = db().await;
        db.query("DEFINE TABLE thing SCHEMALESS").await.unwrap();
        let sql = "BEGIN TRANSACTION; CREATE thing:1; IF $taken { THROW 'taken' }; COMMIT TRANSACTION;";
        let refused = Write::new(&db, sql).bind("taken", true).run::<Refused>().await.unwrap_err();
        assert!(matches!(refused, WriteError::Refused(Refused::Taken)), "{refused:?}");
        let mut res = db.query("SELECT VALUE record::id(id) FROM thing").await.unwrap();
        assert!(res.take::<Vec<i64>>(0).unwrap().is_empty(), "a refused transaction writes nothing");

        Write::new(&db, sql).bind("taken", false).run::<Refused>().await.unwrap();
        let mut res = db.query("SELECT VALUE record::id(id) FROM thing").await.unwrap();
        assert_eq!(res.take::<Vec<i64>>(0).unwrap(), vec![1]);
    }

    #[tokio::test]
    async fn an_unknown_code_or_another_failure_is_a_failure() {
        let db = db().await;
        let unknown = Write::new(&db, "THROW 'taken_too'").run::<Refused>().await.unwrap_err();
        assert!(matches!(&unknown, WriteError::Failed(e) if thrown(e) == Some("taken_too")), "{unknown:?}");
        let nothing = Write::new(&db, "THROW 'taken'").run::<NoRefusal>().await.unwrap_err();
        assert!(matches!(nothing, WriteError::Failed(_)));
        let broken = Write::new(&db, "SELEC nonsense").run::<Refused>().await.unwrap_err();
        assert!(matches!(&broken, WriteError::Failed(e) if thrown(e).is_none()), "{broken:?}");
    }
}
