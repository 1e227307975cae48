//! The `user` database: its rows, and every SurrealQL statement the service runs.
//!
//! Reads are functions that take typed arguments and return typed rows. Transactions that
//! go through the one write path ([`mosaic_mesh::write`]) are documented constants (or, where
//! the statement depends on the request, functions that build the `Write`); each says what
//! it binds and what it `THROW`s. The handlers hold no SurrealQL.

pub(crate) mod accounts;
pub(crate) mod graph;
pub(crate) mod keys;
pub(crate) mod sessions;

use chrono::{DateTime, Utc};
use mosaic_api::user::{Me, Preferences, Profile, Role};
use mosaic_api::{ApiError, Id, UserId};
use mosaic_mesh::db::Db;
use mosaic_mesh::db::{exec, first, rows};
use surrealdb::types::{Array, RecordId, SurrealValue};

/// Columns of [`UserRow`]; the record key is selected as `key`.
pub const USER_FIELDS: &str = "record::id(id) AS key, username, email, password_hash, display_name, bio, role, topics, followers, following, posts, suspended, created_at";

#[derive(Debug, Clone, SurrealValue)]
#[surreal(crate = "surrealdb::types")]
pub struct UserRow {
    pub key: String,
    pub username: String,
    pub email: String,
    pub password_hash: String,
    pub display_name: String,
    pub bio: String,
    pub role: String,
    pub topics: Vec<String>,
    pub followers: i64,
    pub following: i64,
    pub posts: i64,
    pub suspended: bool,
    pub created_at: DateTime<Utc>,
}

impl UserRow {
    pub fn id(&self) -> UserId {
        UserId::from_trusted(self.key.clone())
    }

    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or_default()
    }

    pub fn me(&self) -> Me {
        Me {
            id: self.id(),
            username: self.username.clone(),
            email: self.email.clone(),
            display_name: self.display_name.clone(),
            bio: self.bio.clone(),
            role: self.role(),
            preferences: Preferences { topics: self.topics.clone() },
            followers: count(self.followers),
            following: count(self.following),
            posts: count(self.posts),
            created_at: self.created_at,
        }
    }

    pub fn profile(&self) -> Profile {
        Profile {
            id: self.id(),
            username: self.username.clone(),
            display_name: self.display_name.clone(),
            bio: self.bio.clone(),
            followers: count(self.followers),
            following: count(self.following),
            posts: count(self.posts),
            created_at: self.created_at,
            viewer: None,
        }
    }
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// `user:<id>`.
pub fn user_rid(id: &UserId) -> RecordId {
    RecordId::new("user", id.as_str())
}

/// `<table>:[a, b]`: the record of an ordered pair (follows, blocks, mutes).
pub fn pair_rid(table: &str, a: &UserId, b: &UserId) -> RecordId {
    RecordId::new(table, Array::from(vec![a.to_string(), b.to_string()]))
}

pub async fn user_by_id(db: &Db, id: &UserId) -> anyhow::Result<Option<UserRow>> {
    first(db.query(format!("SELECT {USER_FIELDS} FROM $rid")).bind(("rid", user_rid(id))), "reading user").await
}

/// The user by id, or `not_found` if missing or suspended.
pub async fn active_user(db: &Db, id: &UserId) -> Result<UserRow, mosaic_mesh::ServiceError> {
    match user_by_id(db, id).await? {
        Some(u) if !u.suspended => Ok(u),
        _ => Err(ApiError::not_found("no such user").into()),
    }
}

pub async fn user_by_field(db: &Db, field: &'static str, value: &str) -> anyhow::Result<Option<UserRow>> {
    debug_assert!(field == "username" || field == "email");
    let query = db
        .query(format!("SELECT {USER_FIELDS} FROM user WHERE {field} = $value LIMIT 1"))
        .bind(("value", value.to_owned()));
    first(query, "looking up user").await
}

pub async fn users_by_ids(db: &Db, ids: &[UserId]) -> anyhow::Result<Vec<UserRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rids: Vec<RecordId> = ids.iter().map(user_rid).collect();
    let found: Vec<UserRow> =
        rows(db.query(format!("SELECT {USER_FIELDS} FROM $rids")).bind(("rids", rids)), "reading users").await?;
    // Keep the caller's order; unknown ids drop out.
    let mut by_id: std::collections::HashMap<String, UserRow> = found.into_iter().map(|r| (r.key.clone(), r)).collect();
    Ok(ids.iter().filter_map(|id| by_id.remove(id.as_str())).collect())
}

pub async fn users_by_usernames(db: &Db, names: &[String]) -> anyhow::Result<Vec<UserRow>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let query =
        db.query(format!("SELECT {USER_FIELDS} FROM user WHERE username IN $names")).bind(("names", names.to_vec()));
    rows(query, "looking up usernames").await
}

/// Every active administrator.
pub async fn admins(db: &Db) -> anyhow::Result<Vec<UserId>> {
    let query = db.query("SELECT VALUE record::id(id) FROM user WHERE role = 'admin' AND suspended = false");
    let ids: Vec<String> = rows(query, "listing administrators").await?;
    Ok(ids.into_iter().map(UserId::from_trusted).collect())
}

/// Sets `$uid`'s role to `$role` and inserts `$events`, if the role changes.
pub const SET_ROLE: &str = "BEGIN TRANSACTION;
     IF (SELECT VALUE role FROM ONLY $uid) != $role {
        UPDATE $uid SET role = $role;
        INSERT INTO outbox $events;
     };
     COMMIT TRANSACTION;";
