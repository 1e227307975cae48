//! Likes, comments and views (the interaction service; views go straight to JetStream).

use crate::AppState;
use crate::error::{HttpError, Problem};
use crate::extract::{Auth, JsonBody, QueryParams};
use crate::routes::accounts::ListQuery;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mosaic_api::interaction::{
    AddComment, ByComment, Comment, CommentBody, Comments, DeleteComment, Like, Likers, NewComment, OnPost, PostPage,
    Unlike,
};
use mosaic_api::user::Profile;
use mosaic_api::{CommentId, ErrorCode, Id, Page, PostId};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type S = State<Arc<AppState>>;

/// The interaction routes.
pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(like, unlike))
        .routes(routes!(likers))
        .routes(routes!(add_comment, comments))
        .routes(routes!(delete_comment))
        .routes(routes!(view))
}

fn post_id(raw: &str) -> Result<PostId, HttpError> {
    PostId::parse(raw).ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such post"))
}

/// Like a post; liking twice is one like.
#[utoipa::path(put, path = "/v1/posts/{id}/like", tag = "interactions", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn like(State(s): S, Auth(ctx): Auth, Path(id): Path<String>) -> Result<StatusCode, HttpError> {
    s.mesh.call::<Like>(&ctx, &OnPost { post_id: post_id(&id)? }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Take a like back; idempotent.
#[utoipa::path(delete, path = "/v1/posts/{id}/like", tag = "interactions", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn unlike(State(s): S, Auth(ctx): Auth, Path(id): Path<String>) -> Result<StatusCode, HttpError> {
    s.mesh.call::<Unlike>(&ctx, &OnPost { post_id: post_id(&id)? }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who liked a post, newest first.
#[utoipa::path(get, path = "/v1/posts/{id}/likes", tag = "interactions", params(("id" = String, Path), ListQuery),
    responses((status = 200, body = Page<Profile>), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn likers(
    State(s): S,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Page<Profile>>, HttpError> {
    Ok(Json(s.mesh.call::<Likers>(&ctx, &PostPage { post_id: post_id(&id)?, page: q.into() }).await?))
}

/// Comment on a post, or reply to one of its comments; `@mentions` notify.
#[utoipa::path(post, path = "/v1/posts/{id}/comments", tag = "interactions", params(("id" = String, Path)),
    request_body = CommentBody,
    responses((status = 201, body = Comment), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn add_comment(
    State(s): S,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CommentBody>,
) -> Result<(StatusCode, Json<Comment>), HttpError> {
    let comment = s.mesh.call::<AddComment>(&ctx, &NewComment { post_id: post_id(&id)?, body }).await?;
    Ok((StatusCode::CREATED, Json(comment)))
}

/// A post's comments and replies, oldest first.
#[utoipa::path(get, path = "/v1/posts/{id}/comments", tag = "interactions", params(("id" = String, Path), ListQuery),
    responses((status = 200, body = Page<Comment>), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn comments(
    State(s): S,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Page<Comment>>, HttpError> {
    Ok(Json(s.mesh.call::<Comments>(&ctx, &PostPage { post_id: post_id(&id)?, page: q.into() }).await?))
}

/// Delete a comment and its replies: its author, the post's author or an administrator.
#[utoipa::path(delete, path = "/v1/comments/{id}", tag = "interactions", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn delete_comment(State(s): S, Auth(ctx): Auth, Path(id): Path<String>) -> Result<StatusCode, HttpError> {
    let comment_id = CommentId::parse(&id).ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such comment"))?;
    s.mesh.call::<DeleteComment>(&ctx, &ByComment { comment_id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Record that the caller saw a post (for analytics). Never waits on storage.
#[utoipa::path(post, path = "/v1/posts/{id}/views", tag = "interactions", params(("id" = String, Path)),
    responses((status = 202), (status = 404, body = Problem), (status = 429, body = Problem)), security(("bearer" = [])))]
async fn view(State(s): S, Auth(ctx): Auth, Path(id): Path<String>) -> Result<StatusCode, HttpError> {
    let viewer = ctx.require_user()?.clone();
    s.views
        .record(post_id(&id)?, viewer)
        .map_err(|secs| mosaic_api::ApiError::rate_limited("too many views recorded; slow down", secs))?;
    Ok(StatusCode::ACCEPTED)
}
