//! Rows of the `user` database and the queries several endpoints share.

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use mosaic_api::user::{Me, Preferences, Profile, Role};
use mosaic_api::{ApiError, Id, UserId};
use mosaic_mesh::db::{Checked as _, Db};
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
    let mut res = db
        .query(format!("SELECT {USER_FIELDS} FROM $rid"))
        .bind(("rid", user_rid(id)))
        .await
        .context("reading user")?;
    let rows: Vec<UserRow> = res.take(0).context("reading user")?;
    Ok(rows.into_iter().next())
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
    let mut res = db
        .query(format!("SELECT {USER_FIELDS} FROM user WHERE {field} = $value LIMIT 1"))
        .bind(("value", value.to_owned()))
        .await
        .context("looking up user")?;
    let rows: Vec<UserRow> = res.take(0).context("looking up user")?;
    Ok(rows.into_iter().next())
}

pub async fn users_by_ids(db: &Db, ids: &[UserId]) -> anyhow::Result<Vec<UserRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rids: Vec<RecordId> = ids.iter().map(user_rid).collect();
    let mut res =
        db.query(format!("SELECT {USER_FIELDS} FROM $rids")).bind(("rids", rids)).await.context("reading users")?;
    let rows: Vec<UserRow> = res.take(0).context("reading users")?;
    // Keep the caller's order; unknown ids drop out.
    let mut by_id: std::collections::HashMap<String, UserRow> = rows.into_iter().map(|r| (r.key.clone(), r)).collect();
    Ok(ids.iter().filter_map(|id| by_id.remove(id.as_str())).collect())
}

pub async fn users_by_usernames(db: &Db, names: &[String]) -> anyhow::Result<Vec<UserRow>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut res = db
        .query(format!("SELECT {USER_FIELDS} FROM user WHERE username IN $names"))
        .bind(("names", names.to_vec()))
        .await
        .context("looking up usernames")?;
    res.take(0).context("looking up usernames")
}

pub async fn grant_admins(db: &Db, admins: &[String]) -> anyhow::Result<()> {
    if admins.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = admins.iter().map(|a| a.trim().to_lowercase()).collect();
    db.query("UPDATE user SET role = 'admin' WHERE username IN $names AND role != 'admin'")
        .bind(("names", names))
        .await
        .and_then(|r| r.checked())
        .context("granting configured admin roles")?;
    Ok(())
}
