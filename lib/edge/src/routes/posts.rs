//! Posts and user timelines (the content service).

use crate::AppState;
use crate::error::{HttpError, Problem};
use crate::extract::{Auth, JsonBody, PathUser, QueryParams};
use crate::routes::Relayed;
use crate::routes::accounts::ListQuery;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mosaic_api::content::{self as api, ByPost, CreatePostRequest, Post, Timeline};
use mosaic_api::{ErrorCode, Id, Page, PostId};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type S = State<Arc<AppState>>;

/// The post routes.
pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(create_post)).routes(routes!(get_post, delete_post)).routes(routes!(user_posts))
}

fn post_id(raw: &str) -> Result<PostId, HttpError> {
    PostId::parse(raw).ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such post"))
}

/// Publish a post from the caller's ready media; `#tags` and `@mentions` in the caption count.
#[utoipa::path(post, path = "/v1/posts", tag = "posts", request_body = CreatePostRequest,
    responses((status = 201, body = Post), (status = 403, description = "someone else's media", body = Problem),
              (status = 409, description = "`media_not_ready`, or the media is already in a post", body = Problem),
              (status = 422, body = Problem)), security(("bearer" = [])))]
async fn create_post(
    State(s): S,
    Auth(ctx): Auth,
    JsonBody(req): JsonBody<CreatePostRequest>,
) -> Result<(StatusCode, Json<Post>), HttpError> {
    Ok((StatusCode::CREATED, Json(s.mesh.call::<api::CreatePost>(&ctx, &req).await?)))
}

/// A post.
#[utoipa::path(get, path = "/v1/posts/{id}", tag = "posts", params(("id" = String, Path)),
    responses((status = 200, body = Post), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn get_post(State(s): S, Auth(ctx): Auth, Path(id): Path<String>) -> Result<Json<Post>, HttpError> {
    Ok(Json(s.mesh.call::<api::GetPost>(&ctx, &ByPost { post_id: post_id(&id)? }).await?))
}

/// Delete a post (its author or an administrator); its media is deleted too.
#[utoipa::path(delete, path = "/v1/posts/{id}", tag = "posts", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn delete_post(State(s): S, Auth(ctx): Auth, Path(id): Path<String>) -> Result<StatusCode, HttpError> {
    s.mesh.call::<api::DeletePost>(&ctx, &ByPost { post_id: post_id(&id)? }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's posts, newest first.
#[utoipa::path(get, path = "/v1/users/{id}/posts", tag = "posts", params(("id" = String, Path), ListQuery),
    responses((status = 200, body = Page<Post>), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn user_posts(
    State(s): S,
    Auth(ctx): Auth,
    PathUser(user_id): PathUser,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Relayed, HttpError> {
    Ok(Relayed(s.mesh.call_json::<api::UserPosts>(&ctx, &Timeline { user_id, page: q.into() }).await?))
}
