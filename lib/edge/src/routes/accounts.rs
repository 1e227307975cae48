//! Accounts: `/v1/auth/*`, `/v1/users/*`, `/v1/admin/users/*` (the user service).

use crate::AppState;
use crate::error::{HttpError, Problem};
use crate::extract::{Anon, Auth, JsonBody, OptionalJson, PathUser, QueryParams};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mosaic_api::user::{
    self as api, AuthReply, ByUser, ByUsername, ChangePasswordRequest, Jwks, ListGraph, LoginRequest, Me, Profile,
    RefreshRequest, SignupRequest, SuspendRequest, UpdateProfileRequest,
};
use mosaic_api::{Page, PageRequest};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type S = State<Arc<AppState>>;

/// The account routes.
pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(jwks))
        .routes(routes!(me, update_me))
        .routes(routes!(change_password))
        .routes(routes!(profile))
        .routes(routes!(follow, unfollow))
        .routes(routes!(followers))
        .routes(routes!(following))
        .routes(routes!(block, unblock))
        .routes(routes!(mute, unmute))
        .routes(routes!(suspend))
        .routes(routes!(unsuspend))
}

/// Page selection of list routes.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size, 1–100 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl From<ListQuery> for PageRequest {
    fn from(q: ListQuery) -> Self {
        PageRequest { limit: q.limit, cursor: q.cursor }
    }
}

/// Create an account.
#[utoipa::path(post, path = "/v1/auth/signup", tag = "accounts", request_body = SignupRequest,
    responses((status = 201, body = AuthReply), (status = 409, description = "`username_taken` or `email_taken`", body = Problem),
              (status = 422, description = "`validation_failed` or `weak_password`", body = Problem)))]
async fn signup(
    State(s): S,
    Anon(ctx): Anon,
    JsonBody(req): JsonBody<SignupRequest>,
) -> Result<(StatusCode, Json<AuthReply>), HttpError> {
    Ok((StatusCode::CREATED, Json(s.mesh.call::<api::Signup>(&ctx, &req).await?)))
}

/// Log in with a username or email and a password.
#[utoipa::path(post, path = "/v1/auth/login", tag = "accounts", request_body = LoginRequest,
    responses((status = 200, body = AuthReply), (status = 401, description = "`invalid_credentials`", body = Problem),
              (status = 403, description = "`account_suspended`", body = Problem), (status = 429, description = "`rate_limited`", body = Problem)))]
async fn login(
    State(s): S,
    Anon(ctx): Anon,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Json<AuthReply>, HttpError> {
    Ok(Json(s.mesh.call::<api::Login>(&ctx, &req).await?))
}

/// Exchange a refresh token for a new token pair. Reusing a spent refresh token ends its session.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "accounts", request_body = RefreshRequest,
    responses((status = 200, body = AuthReply), (status = 401, description = "`unauthorized` or `refresh_token_reused`", body = Problem)))]
async fn refresh(
    State(s): S,
    Anon(ctx): Anon,
    JsonBody(req): JsonBody<RefreshRequest>,
) -> Result<Json<AuthReply>, HttpError> {
    Ok(Json(s.mesh.call::<api::Refresh>(&ctx, &req).await?))
}

/// End the session of a refresh token.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "accounts", request_body = RefreshRequest,
    responses((status = 204), (status = 401, body = Problem)), security(("bearer" = [])))]
async fn logout(
    State(s): S,
    Auth(ctx): Auth,
    JsonBody(req): JsonBody<RefreshRequest>,
) -> Result<StatusCode, HttpError> {
    s.mesh.call::<api::Logout>(&ctx, &req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Public keys that verify access tokens (JWK Set).
#[utoipa::path(get, path = "/v1/auth/jwks", tag = "accounts", responses((status = 200, body = Jwks)))]
async fn jwks(State(s): S) -> Json<Jwks> {
    Json(s.auth.jwks())
}

/// The caller's own profile, with email and preferences.
#[utoipa::path(get, path = "/v1/users/me", tag = "accounts",
    responses((status = 200, body = Me), (status = 401, body = Problem)), security(("bearer" = [])))]
async fn me(State(s): S, Auth(ctx): Auth) -> Result<Json<Me>, HttpError> {
    Ok(Json(s.mesh.call::<api::GetMe>(&ctx, &Default::default()).await?))
}

/// Update display name, bio and preferences.
#[utoipa::path(patch, path = "/v1/users/me", tag = "accounts", request_body = UpdateProfileRequest,
    responses((status = 200, body = Me), (status = 422, body = Problem)), security(("bearer" = [])))]
async fn update_me(
    State(s): S,
    Auth(ctx): Auth,
    JsonBody(req): JsonBody<UpdateProfileRequest>,
) -> Result<Json<Me>, HttpError> {
    Ok(Json(s.mesh.call::<api::UpdateMe>(&ctx, &req).await?))
}

/// Change the password; every other session of the user ends.
#[utoipa::path(put, path = "/v1/users/me/password", tag = "accounts", request_body = ChangePasswordRequest,
    responses((status = 204), (status = 401, description = "`invalid_credentials`: wrong current password", body = Problem),
              (status = 422, description = "`weak_password`", body = Problem)), security(("bearer" = [])))]
async fn change_password(
    State(s): S,
    Auth(ctx): Auth,
    JsonBody(req): JsonBody<ChangePasswordRequest>,
) -> Result<StatusCode, HttpError> {
    s.mesh.call::<api::ChangePassword>(&ctx, &req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A public profile by username.
#[utoipa::path(get, path = "/v1/users/{username}", tag = "accounts", params(("username" = String, Path)),
    responses((status = 200, body = Profile), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn profile(State(s): S, Auth(ctx): Auth, Path(username): Path<String>) -> Result<Json<Profile>, HttpError> {
    Ok(Json(s.mesh.call::<api::GetProfile>(&ctx, &ByUsername { username }).await?))
}

/// Follow a user (idempotent).
#[utoipa::path(put, path = "/v1/users/{id}/follow", tag = "accounts", params(("id" = String, Path)),
    responses((status = 204), (status = 403, description = "blocked", body = Problem), (status = 404, body = Problem),
              (status = 422, description = "following yourself", body = Problem)), security(("bearer" = [])))]
async fn follow(State(s): S, Auth(ctx): Auth, PathUser(user_id): PathUser) -> Result<StatusCode, HttpError> {
    s.mesh.call::<api::Follow>(&ctx, &ByUser { user_id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Unfollow a user (idempotent).
#[utoipa::path(delete, path = "/v1/users/{id}/follow", tag = "accounts", params(("id" = String, Path)),
    responses((status = 204), (status = 422, body = Problem)), security(("bearer" = [])))]
async fn unfollow(State(s): S, Auth(ctx): Auth, PathUser(user_id): PathUser) -> Result<StatusCode, HttpError> {
    s.mesh.call::<api::Unfollow>(&ctx, &ByUser { user_id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's followers, most recent first.
#[utoipa::path(get, path = "/v1/users/{id}/followers", tag = "accounts", params(("id" = String, Path), ListQuery),
    responses((status = 200, body = Page<Profile>), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn followers(
    State(s): S,
    Auth(ctx): Auth,
    PathUser(user_id): PathUser,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Page<Profile>>, HttpError> {
    Ok(Json(s.mesh.call::<api::Followers>(&ctx, &ListGraph { user_id, page: q.into() }).await?))
}

/// Who a user follows, most recent first.
#[utoipa::path(get, path = "/v1/users/{id}/following", tag = "accounts", params(("id" = String, Path), ListQuery),
    responses((status = 200, body = Page<Profile>), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn following(
    State(s): S,
    Auth(ctx): Auth,
    PathUser(user_id): PathUser,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Page<Profile>>, HttpError> {
    Ok(Json(s.mesh.call::<api::Following>(&ctx, &ListGraph { user_id, page: q.into() }).await?))
}

/// Block a user: follows both ways are removed and they can no longer reach you.
#[utoipa::path(put, path = "/v1/users/{id}/block", tag = "accounts", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
async fn block(State(s): S, Auth(ctx): Auth, PathUser(user_id): PathUser) -> Result<StatusCode, HttpError> {
    s.mesh.call::<api::Block>(&ctx, &ByUser { user_id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Unblock a user.
#[utoipa::path(delete, path = "/v1/users/{id}/block", tag = "accounts", params(("id" = String, Path)),
    responses((status = 204)), security(("bearer" = [])))]
async fn unblock(State(s): S, Auth(ctx): Auth, PathUser(user_id): PathUser) -> Result<StatusCode, HttpError> {
    s.mesh.call::<api::Unblock>(&ctx, &ByUser { user_id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Mute a user: their posts and notifications stop reaching you.
#[utoipa::path(put, path = "/v1/users/{id}/mute", tag = "accounts", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
async fn mute(State(s): S, Auth(ctx): Auth, PathUser(user_id): PathUser) -> Result<StatusCode, HttpError> {
    s.mesh.call::<api::Mute>(&ctx, &ByUser { user_id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Unmute a user.
#[utoipa::path(delete, path = "/v1/users/{id}/mute", tag = "accounts", params(("id" = String, Path)),
    responses((status = 204)), security(("bearer" = [])))]
async fn unmute(State(s): S, Auth(ctx): Auth, PathUser(user_id): PathUser) -> Result<StatusCode, HttpError> {
    s.mesh.call::<api::Unmute>(&ctx, &ByUser { user_id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Optional body of a suspension.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendBody {
    /// Why, for the audit log.
    pub reason: Option<String>,
}

/// Admin: suspend a user. Their tokens stop working at once.
#[utoipa::path(post, path = "/v1/admin/users/{id}/suspend", tag = "admin", params(("id" = String, Path)), request_body(content = Option<SuspendBody>),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn suspend(
    State(s): S,
    auth: Auth,
    PathUser(user_id): PathUser,
    OptionalJson(body): OptionalJson<SuspendBody>,
) -> Result<StatusCode, HttpError> {
    auth.require_admin()?;
    let reason = body.and_then(|b| b.reason);
    s.mesh.call::<api::Suspend>(&auth.0, &SuspendRequest { user_id, reason }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Admin: lift a suspension.
#[utoipa::path(post, path = "/v1/admin/users/{id}/unsuspend", tag = "admin", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn unsuspend(State(s): S, auth: Auth, PathUser(user_id): PathUser) -> Result<StatusCode, HttpError> {
    auth.require_admin()?;
    s.mesh.call::<api::Unsuspend>(&auth.0, &ByUser { user_id }).await?;
    Ok(StatusCode::NO_CONTENT)
}
