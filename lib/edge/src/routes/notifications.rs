//! The inbox, notification preferences, push devices and unsubscribe links (the
//! notification service).

use crate::AppState;
use crate::error::{HttpError, Problem};
use crate::extract::{Anon, Auth, JsonBody, QueryParams};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use mosaic_api::endpoint::Empty;
use mosaic_api::notification::{
    ByDevice, ByNotification, Device, DeviceRegistered, Devices, GetNotification, GetPreferences, GetUnreadCount,
    GetVapidKey, Inbox, InboxQuery, MarkNotificationsRead, MarkReadBody, Notification, NotificationDetail,
    NotificationPreferences, PutPreferences, RegisterDevice, RegisterDeviceBody, RemoveDevice, UnreadCount,
    Unsubscribe, UnsubscribeRequest, Unsubscribed, VapidKey,
};
use mosaic_api::{DeviceId, ErrorCode, Id, NotificationId, Page, PageRequest};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type S = State<Arc<AppState>>;

/// The notification routes.
pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(inbox))
        .routes(routes!(unread))
        .routes(routes!(detail))
        .routes(routes!(mark_read))
        .routes(routes!(preferences, put_preferences))
        .routes(routes!(register_device, devices))
        .routes(routes!(remove_device))
        .routes(routes!(vapid_key))
        .routes(routes!(unsubscribe_page, unsubscribe_one_click))
}

/// Page selection of the inbox.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InboxParams {
    /// Page size, 1–100 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only unread entries.
    pub unread: Option<bool>,
}

/// The caller's inbox, most recently updated first. Bursts are coalesced: `actor` is the
/// latest, `others` counts the rest.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", params(InboxParams),
    responses((status = 200, body = Page<Notification>), (status = 422, body = Problem)), security(("bearer" = [])))]
async fn inbox(
    State(s): S,
    Auth(ctx): Auth,
    QueryParams(q): QueryParams<InboxParams>,
) -> Result<Json<Page<Notification>>, HttpError> {
    let query =
        InboxQuery { page: PageRequest { limit: q.limit, cursor: q.cursor }, unread_only: q.unread.unwrap_or(false) };
    Ok(Json(s.mesh.call::<Inbox>(&ctx, &query).await?))
}

/// How many inbox entries are unread.
#[utoipa::path(get, path = "/v1/notifications/unread_count", tag = "notifications",
    responses((status = 200, body = UnreadCount)), security(("bearer" = [])))]
async fn unread(State(s): S, Auth(ctx): Auth) -> Result<Json<UnreadCount>, HttpError> {
    Ok(Json(s.mesh.call::<GetUnreadCount>(&ctx, &Empty {}).await?))
}

/// One inbox entry, with how it went out on each channel (`deliveries`).
#[utoipa::path(get, path = "/v1/notifications/{id}", tag = "notifications", params(("id" = String, Path)),
    responses((status = 200, body = NotificationDetail), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn detail(State(s): S, Auth(ctx): Auth, Path(id): Path<String>) -> Result<Json<NotificationDetail>, HttpError> {
    let notification_id =
        NotificationId::parse(&id).ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such notification"))?;
    Ok(Json(s.mesh.call::<GetNotification>(&ctx, &ByNotification { notification_id }).await?))
}

/// Mark entries (`ids`) or everything (`all`) read; the caller's other devices are told.
#[utoipa::path(post, path = "/v1/notifications/read", tag = "notifications", request_body = MarkReadBody,
    responses((status = 204), (status = 422, body = Problem)), security(("bearer" = [])))]
async fn mark_read(
    State(s): S,
    Auth(ctx): Auth,
    JsonBody(body): JsonBody<MarkReadBody>,
) -> Result<StatusCode, HttpError> {
    s.mesh.call::<MarkNotificationsRead>(&ctx, &body).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's notification preferences: per type × channel, and quiet hours.
#[utoipa::path(get, path = "/v1/notifications/preferences", tag = "notifications",
    responses((status = 200, body = NotificationPreferences)), security(("bearer" = [])))]
async fn preferences(State(s): S, Auth(ctx): Auth) -> Result<Json<NotificationPreferences>, HttpError> {
    Ok(Json(s.mesh.call::<GetPreferences>(&ctx, &Empty {}).await?))
}

/// Replace the caller's notification preferences (absent types take their defaults).
#[utoipa::path(put, path = "/v1/notifications/preferences", tag = "notifications", request_body = NotificationPreferences,
    responses((status = 200, body = NotificationPreferences), (status = 422, body = Problem)), security(("bearer" = [])))]
async fn put_preferences(
    State(s): S,
    Auth(ctx): Auth,
    JsonBody(body): JsonBody<NotificationPreferences>,
) -> Result<Json<NotificationPreferences>, HttpError> {
    Ok(Json(s.mesh.call::<PutPreferences>(&ctx, &body).await?))
}

/// Register a push device: an FCM token, or a browser's Push API subscription.
#[utoipa::path(post, path = "/v1/devices", tag = "notifications", request_body = RegisterDeviceBody,
    responses((status = 201, body = DeviceRegistered), (status = 422, body = Problem)), security(("bearer" = [])))]
async fn register_device(
    State(s): S,
    Auth(ctx): Auth,
    JsonBody(body): JsonBody<RegisterDeviceBody>,
) -> Result<(StatusCode, Json<DeviceRegistered>), HttpError> {
    Ok((StatusCode::CREATED, Json(s.mesh.call::<RegisterDevice>(&ctx, &body).await?)))
}

/// The caller's push devices.
#[utoipa::path(get, path = "/v1/devices", tag = "notifications",
    responses((status = 200, body = Vec<Device>)), security(("bearer" = [])))]
async fn devices(State(s): S, Auth(ctx): Auth) -> Result<Json<Vec<Device>>, HttpError> {
    Ok(Json(s.mesh.call::<Devices>(&ctx, &Empty {}).await?))
}

/// Remove one of the caller's push devices.
#[utoipa::path(delete, path = "/v1/devices/{id}", tag = "notifications", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn remove_device(State(s): S, Auth(ctx): Auth, Path(id): Path<String>) -> Result<StatusCode, HttpError> {
    let device_id = DeviceId::parse(&id).ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such device"))?;
    s.mesh.call::<RemoveDevice>(&ctx, &ByDevice { device_id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The VAPID public key browsers subscribe with (`applicationServerKey`).
#[utoipa::path(get, path = "/v1/devices/webpush/key", tag = "notifications", responses((status = 200, body = VapidKey)))]
async fn vapid_key(State(s): S, Anon(ctx): Anon) -> Result<Json<VapidKey>, HttpError> {
    Ok(Json(s.mesh.call::<GetVapidKey>(&ctx, &Empty {}).await?))
}

/// The token of an unsubscribe link.
#[derive(Debug, Deserialize, IntoParams)]
pub struct UnsubscribeParams {
    /// The signed token from the email.
    pub token: String,
}

/// Unsubscribe link of an email (no login): turns off emails of the type it names, or all.
#[utoipa::path(get, path = "/v1/notifications/unsubscribe", tag = "notifications", params(UnsubscribeParams),
    responses((status = 200, body = Unsubscribed), (status = 404, description = "not a valid link", body = Problem)))]
async fn unsubscribe_page(
    State(s): S,
    Anon(ctx): Anon,
    QueryParams(q): QueryParams<UnsubscribeParams>,
) -> Result<Json<Unsubscribed>, HttpError> {
    Ok(Json(s.mesh.call::<Unsubscribe>(&ctx, &UnsubscribeRequest { token: q.token }).await?))
}

/// One-click unsubscribe (RFC 8058), as mail clients POST it from `List-Unsubscribe`.
#[utoipa::path(post, path = "/v1/notifications/unsubscribe", tag = "notifications", params(UnsubscribeParams),
    responses((status = 200, body = Unsubscribed), (status = 404, description = "not a valid link", body = Problem)))]
async fn unsubscribe_one_click(
    State(s): S,
    Anon(ctx): Anon,
    QueryParams(q): QueryParams<UnsubscribeParams>,
) -> Result<Json<Unsubscribed>, HttpError> {
    Ok(Json(s.mesh.call::<Unsubscribe>(&ctx, &UnsubscribeRequest { token: q.token }).await?))
}
