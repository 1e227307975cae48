//! Conversations and messages (the messaging service).

use crate::AppState;
use crate::error::{HttpError, Problem};
use crate::extract::{Auth, JsonBody, QueryParams};
use crate::routes::accounts::ListQuery;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mosaic_api::endpoint::Empty;
use mosaic_api::messaging::{
    AddGroupMembers, AddMembers, AddMembersBody, ByConversation, Conversation, Conversations, CreateConversation,
    CreateConversationBody, GetConversation, History, HistoryQuery, Leave, ListConversations, MarkDelivered, MarkRead,
    Message, NewMessage, Receipt, SendMessage, SendMessageBody, Typing, UpToBody,
};
use mosaic_api::{ConversationId, ErrorCode, Id, Page};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type S = State<Arc<AppState>>;

/// The messaging routes.
pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(get))
        .routes(routes!(send, history))
        .routes(routes!(read))
        .routes(routes!(delivered))
        .routes(routes!(typing))
        .routes(routes!(add_members))
        .routes(routes!(leave))
}

fn conversation_id(raw: &str) -> Result<ConversationId, HttpError> {
    ConversationId::parse(raw).ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such conversation"))
}

/// Start a conversation: with one other member and no title, the 1:1 conversation of the
/// pair (200 with the existing one if it exists); otherwise a group.
#[utoipa::path(post, path = "/v1/conversations", tag = "messaging", request_body = CreateConversationBody,
    responses((status = 201, body = Conversation), (status = 200, description = "the existing 1:1 conversation", body = Conversation),
              (status = 403, description = "a block stands between the caller and a member", body = Problem),
              (status = 404, description = "no such user", body = Problem), (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn create(
    State(s): S,
    Auth(ctx): Auth,
    JsonBody(body): JsonBody<CreateConversationBody>,
) -> Result<(StatusCode, Json<Conversation>), HttpError> {
    let created = s.mesh.call::<CreateConversation>(&ctx, &body).await?;
    let status = if created.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(created.conversation)))
}

/// The caller's conversations, most recent activity first, with unread counts.
#[utoipa::path(get, path = "/v1/conversations", tag = "messaging", params(ListQuery),
    responses((status = 200, body = Page<Conversation>), (status = 422, body = Problem)), security(("bearer" = [])))]
async fn list(
    State(s): S,
    Auth(ctx): Auth,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Page<Conversation>>, HttpError> {
    Ok(Json(s.mesh.call::<Conversations>(&ctx, &ListConversations { page: q.into() }).await?))
}

/// One conversation with its members and their receipts (members only; 404 otherwise).
#[utoipa::path(get, path = "/v1/conversations/{id}", tag = "messaging", params(("id" = String, Path)),
    responses((status = 200, body = Conversation), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn get(State(s): S, Auth(ctx): Auth, Path(id): Path<String>) -> Result<Json<Conversation>, HttpError> {
    Ok(Json(s.mesh.call::<GetConversation>(&ctx, &ByConversation { conversation_id: conversation_id(&id)? }).await?))
}

/// History, newest first (members only; 404 otherwise).
#[utoipa::path(get, path = "/v1/conversations/{id}/messages", tag = "messaging", params(("id" = String, Path), ListQuery),
    responses((status = 200, body = Page<Message>), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn history(
    State(s): S,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Page<Message>>, HttpError> {
    let query = HistoryQuery { conversation_id: conversation_id(&id)?, page: q.into() };
    Ok(Json(s.mesh.call::<History>(&ctx, &query).await?))
}

/// Send a message; with a `client_id`, a retry returns the first message.
#[utoipa::path(post, path = "/v1/conversations/{id}/messages", tag = "messaging", params(("id" = String, Path)),
    request_body = SendMessageBody,
    responses((status = 201, body = Message), (status = 403, description = "blocked", body = Problem),
              (status = 404, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)),
    security(("bearer" = [])))]
async fn send(
    State(s): S,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<SendMessageBody>,
) -> Result<(StatusCode, Json<Message>), HttpError> {
    let message =
        s.mesh.call::<SendMessage>(&ctx, &NewMessage { conversation_id: conversation_id(&id)?, body }).await?;
    Ok((StatusCode::CREATED, Json(message)))
}

/// Mark the conversation read up to a message: the other members see the receipt, the
/// caller's other devices their new unread count.
#[utoipa::path(post, path = "/v1/conversations/{id}/read", tag = "messaging", params(("id" = String, Path)),
    request_body = UpToBody, responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn read(
    State(s): S,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpToBody>,
) -> Result<StatusCode, HttpError> {
    s.mesh.call::<MarkRead>(&ctx, &Receipt { conversation_id: conversation_id(&id)?, up_to: body.up_to }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Report that this device received messages up to one (delivery receipt).
#[utoipa::path(post, path = "/v1/conversations/{id}/delivered", tag = "messaging", params(("id" = String, Path)),
    request_body = UpToBody, responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn delivered(
    State(s): S,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpToBody>,
) -> Result<StatusCode, HttpError> {
    s.mesh.call::<MarkDelivered>(&ctx, &Receipt { conversation_id: conversation_id(&id)?, up_to: body.up_to }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Tell the other members the caller is typing (ephemeral; at most one every few seconds
/// is passed on).
#[utoipa::path(post, path = "/v1/conversations/{id}/typing", tag = "messaging", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn typing(State(s): S, Auth(ctx): Auth, Path(id): Path<String>) -> Result<StatusCode, HttpError> {
    let _: Empty = s.mesh.call::<Typing>(&ctx, &ByConversation { conversation_id: conversation_id(&id)? }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Add members to a group.
#[utoipa::path(post, path = "/v1/conversations/{id}/members", tag = "messaging", params(("id" = String, Path)),
    request_body = AddMembersBody,
    responses((status = 200, body = Conversation), (status = 403, body = Problem), (status = 404, body = Problem),
              (status = 422, body = Problem)),
    security(("bearer" = [])))]
async fn add_members(
    State(s): S,
    Auth(ctx): Auth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<AddMembersBody>,
) -> Result<Json<Conversation>, HttpError> {
    let req = AddMembers { conversation_id: conversation_id(&id)?, member_ids: body.member_ids };
    Ok(Json(s.mesh.call::<AddGroupMembers>(&ctx, &req).await?))
}

/// Leave a group.
#[utoipa::path(post, path = "/v1/conversations/{id}/leave", tag = "messaging", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem), (status = 422, body = Problem)), security(("bearer" = [])))]
async fn leave(State(s): S, Auth(ctx): Auth, Path(id): Path<String>) -> Result<StatusCode, HttpError> {
    s.mesh.call::<Leave>(&ctx, &ByConversation { conversation_id: conversation_id(&id)? }).await?;
    Ok(StatusCode::NO_CONTENT)
}
