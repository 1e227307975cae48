//! Administration: suspension, and the administrator role, which operators grant
//! (`mosaic admin grant`), never a name or a request.

use crate::UserService;
use crate::accounts::user_key;
use crate::store::{self, user_rid};
use anyhow::Context as _;
use chrono::Utc;
use mosaic_api::ApiError;
use mosaic_api::UserId;
use mosaic_api::endpoint::Empty;
use mosaic_api::user::{AdminGranted, AdminRevoked, ByUser, Revocation, Role, SuspendRequest, Suspended, Unsuspended};
use mosaic_mesh::db::Db;
use mosaic_mesh::kv::Bucket;
use mosaic_mesh::outbox::Staged;
use mosaic_mesh::write::{NoRefusal, Write};
use mosaic_mesh::{Ctx, ServiceResult};
use std::sync::Arc;

/// Gives the account `username` the administrator role (`admin`) or takes it away, and
/// records the change as an audit event (published by a running user service's relay).
/// A user whose role was taken away keeps it in live access tokens until
/// they expire or the caller revokes them (see [`revoke_tokens`]). `None`: no such account.
pub async fn set_admin(db: &Db, username: &str, admin: bool) -> anyhow::Result<Option<UserId>> {
    let Some(user) = store::user_by_field(db, "username", &username.trim().to_lowercase()).await? else {
        return Ok(None);
    };
    let id = user.id();
    let (role, event) = if admin {
        (Role::Admin, Staged::new(AdminGranted { user_id: id.clone() }))
    } else {
        (Role::User, Staged::new(AdminRevoked { user_id: id.clone() }))
    };
    Write::new(db, store::SET_ROLE)
        .bind("uid", user_rid(&id))
        .bind("role", role.as_str().to_owned())
        .stage(vec![event])
        .run::<NoRefusal>()
        .await
        .context("changing the administrator role")?;
    tracing::info!(user = %id, %username, admin, "administrator role changed by an operator");
    Ok(Some(id))
}

/// Voids every live access token of `user` (their sessions go on: a refresh gets a token
/// with the user's current role).
pub async fn revoke_tokens(revocations: &Bucket, user: &UserId) -> anyhow::Result<()> {
    let revocation = Revocation { not_before_ms: Utc::now().timestamp_millis(), except_session: None };
    revocations.put_json(&user_key(user), &revocation).await.map(drop)
}

impl UserService {
    /// Suspends a user: login and refresh are refused, every session is revoked, and the
    /// revocations bucket voids their live access tokens at every edge within moments.
    pub(crate) async fn suspend(self: Arc<Self>, ctx: Ctx, req: SuspendRequest) -> ServiceResult<Empty> {
        let admin = ctx.require_admin()?;
        if *admin == req.user_id {
            return Err(ApiError::validation("you cannot suspend yourself").into());
        }
        if store::user_by_id(&self.db, &req.user_id).await?.is_none() {
            return Err(ApiError::not_found("no such user").into());
        }
        let events = vec![Staged::new(Suspended { user_id: req.user_id.clone() })];
        self.outbox
            .write(store::accounts::SUSPEND)
            .bind("uid", user_rid(&req.user_id))
            .stage(events)
            .run::<NoRefusal>()
            .await
            .context("suspending user")?;
        revoke_tokens(&self.revocations, &req.user_id).await?;
        tracing::info!(user = %req.user_id, by = %admin, reason = ?req.reason, "user suspended");
        Ok(Empty {})
    }

    pub(crate) async fn unsuspend(self: Arc<Self>, ctx: Ctx, req: ByUser) -> ServiceResult<Empty> {
        let admin = ctx.require_admin()?;
        if store::user_by_id(&self.db, &req.user_id).await?.is_none() {
            return Err(ApiError::not_found("no such user").into());
        }
        let events = vec![Staged::new(Unsuspended { user_id: req.user_id.clone() })];
        self.outbox
            .write(store::accounts::UNSUSPEND)
            .bind("uid", user_rid(&req.user_id))
            .stage(events)
            .run::<NoRefusal>()
            .await
            .context("lifting suspension")?;
        tracing::info!(user = %req.user_id, by = %admin, "suspension lifted");
        Ok(Empty {})
    }
}
