//! Administration: suspension.

use crate::UserService;
use crate::accounts::user_key;
use crate::store::{self, user_rid};
use anyhow::Context as _;
use chrono::Utc;
use mosaic_api::ApiError;
use mosaic_api::endpoint::Empty;
use mosaic_api::user::{ByUser, Revocation, SuspendRequest, Suspended, Unsuspended};
use mosaic_mesh::outbox::Staged;
use mosaic_mesh::write::NoRefusal;
use mosaic_mesh::{Ctx, ServiceResult};
use std::sync::Arc;

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
        self.revocations
            .put_json(
                &user_key(&req.user_id),
                &Revocation { not_before_ms: Utc::now().timestamp_millis(), except_session: None },
            )
            .await?;
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
