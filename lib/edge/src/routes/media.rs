//! Media: streamed uploads, metadata, and serving the bytes of variants.
//!
//! Upload bytes never cross NATS: the edge streams them straight into the object store
//! (flat memory whatever the size), checking the claimed type against the first bytes and
//! counting against the limit the content service granted, then registers them.

use crate::AppState;
use crate::error::{HttpError, Problem};
use crate::extract::Auth;
use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use mosaic_api::content::{
    self as api, BeginUpload, ByMedia, CompleteUpload, Media, MediaAccepted, StorageUsage, layout, sniff,
};
use mosaic_api::endpoint::Empty;
use mosaic_api::{ApiError, ErrorCode, Id, MediaId};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore as _, ObjectStoreExt as _, WriteMultipart};
use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

type S = State<Arc<AppState>>;
type ByteStream<'a> = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send + 'a>>;

/// Parts written to the store per request at once (each 8 MiB): peak memory per upload.
const PART_SIZE: usize = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 2;

/// The media routes. The upload route has no body limit of its own (uploads are limited
/// by the content service's grant, counted while streaming).
pub fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(upload))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .merge(OpenApiRouter::new().routes(routes!(get_media)).routes(routes!(variant)).routes(routes!(storage)))
}

/// Upload a photo or video: the raw bytes with their `Content-Type`, or `multipart/form-data`
/// with a `file` field. Processing continues in the background; poll `GET /v1/media/{id}`.
#[utoipa::path(post, path = "/v1/media", tag = "media",
    request_body(content = Vec<u8>, description = "image/jpeg, image/png, image/webp, image/gif, video/mp4, video/quicktime, video/webm; or multipart field `file`", content_type = "application/octet-stream"),
    responses((status = 202, body = MediaAccepted), (status = 413, description = "`payload_too_large` or `quota_exceeded`", body = Problem),
              (status = 415, description = "`unsupported_media_type`: not accepted, or the bytes are not what they claim", body = Problem)),
    security(("bearer" = [])))]
async fn upload(State(s): S, Auth(ctx): Auth, req: Request) -> Result<(StatusCode, Json<MediaAccepted>), HttpError> {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(req, &())
            .await
            .map_err(|e| HttpError::new(ErrorCode::BadRequest, e.body_text()))?;
        while let Some(field) =
            multipart.next_field().await.map_err(|e| HttpError::new(ErrorCode::BadRequest, e.body_text()))?
        {
            if field.name() != Some("file") {
                continue;
            }
            let claimed = field.content_type().map(str::to_owned);
            let stream: ByteStream = Box::pin(field.map(|c| c.map_err(|e| e.body_text())));
            let accepted = stream_upload(&s, &ctx, claimed, None, stream).await?;
            return Ok((StatusCode::ACCEPTED, Json(accepted)));
        }
        return Err(HttpError::new(ErrorCode::ValidationFailed, "the form has no `file` field"));
    }
    let claimed = Some(content_type.split(';').next().unwrap_or("").trim().to_owned()).filter(|c| !c.is_empty());
    let stream: ByteStream = Box::pin(req.into_body().into_data_stream().map(|c| c.map_err(|e| e.to_string())));
    let accepted = stream_upload(&s, &ctx, claimed, declared, stream).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

async fn stream_upload(
    s: &AppState,
    ctx: &mosaic_mesh::Ctx,
    claimed: Option<String>,
    declared: Option<u64>,
    mut stream: ByteStream<'_>,
) -> Result<MediaAccepted, HttpError> {
    // The first bytes decide the type before anything is stored.
    let mut head = Vec::with_capacity(sniff::PREFIX_LEN);
    let mut pending: Vec<Bytes> = Vec::new();
    while head.len() < sniff::PREFIX_LEN {
        match stream.next().await {
            Some(Ok(chunk)) => {
                head.extend_from_slice(&chunk[..chunk.len().min(sniff::PREFIX_LEN - head.len())]);
                pending.push(chunk);
            }
            Some(Err(e)) => {
                return Err(HttpError::new(ErrorCode::BadRequest, format!("the upload was interrupted: {e}")));
            }
            None => break,
        }
    }
    if head.is_empty() {
        return Err(HttpError::new(ErrorCode::ValidationFailed, "the upload is empty"));
    }
    let actual = sniff::sniff(&head).ok_or_else(|| {
        HttpError::new(ErrorCode::UnsupportedMediaType, "the bytes are not an accepted image or video")
    })?;
    // A generic claim (or none) takes the sniffed type; a specific claim must be the truth.
    let mime = match claimed.as_deref() {
        None | Some("application/octet-stream") => actual.to_owned(),
        Some(c) if api::MediaKind::of_mime(c).is_none() => {
            return Err(HttpError::new(
                ErrorCode::UnsupportedMediaType,
                format!("{c} is not accepted; send one of {}", api::ACCEPTED_TYPES.join(", ")),
            ));
        }
        Some(c) if !sniff::matches(c, actual) => {
            return Err(HttpError::new(ErrorCode::UnsupportedMediaType, format!("the bytes are {actual}, not {c}")));
        }
        Some(c) => c.to_owned(),
    };
    let ticket =
        s.mesh.call::<api::BeginUploadEp>(ctx, &BeginUpload { mime: mime.clone(), declared_bytes: declared }).await?;
    let storage =
        s.storage.as_ref().ok_or_else(|| HttpError::new(ErrorCode::Unavailable, "media storage is not configured"))?;
    let staging = ObjectPath::from(ticket.staging_key.as_str());
    let upload = storage.store.put_multipart(&staging).await.map_err(storage_error)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    let mut hasher = Sha256::new();
    let mut total: u64 = 0;
    let mut next = futures::stream::iter(pending.into_iter().map(Ok)).chain(stream);
    while let Some(chunk) = next.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = writer.abort().await;
                return Err(HttpError::new(ErrorCode::BadRequest, format!("the upload was interrupted: {e}")));
            }
        };
        total += chunk.len() as u64;
        if total > ticket.max_bytes {
            let _ = writer.abort().await;
            return Err(HttpError::new(
                ErrorCode::PayloadTooLarge,
                format!("uploads of this type are limited to {} bytes", ticket.max_bytes),
            ));
        }
        hasher.update(&chunk);
        if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
            return Err(storage_error(e));
        }
        writer.put(chunk);
    }
    writer.finish().await.map_err(storage_error)?;
    let sha256: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let complete = CompleteUpload { upload_id: ticket.upload_id, mime, bytes: total, sha256 };
    Ok(s.mesh.call::<api::CompleteUploadEp>(ctx, &complete).await?)
}

fn storage_error(e: object_store::Error) -> HttpError {
    tracing::error!(error = %e, "media storage failed");
    HttpError::new(ErrorCode::Unavailable, "media storage is unavailable")
}

/// A media item: kind, processing status, variants.
#[utoipa::path(get, path = "/v1/media/{id}", tag = "media", params(("id" = String, Path)),
    responses((status = 200, body = Media), (status = 404, body = Problem)), security(("bearer" = [])))]
async fn get_media(State(s): S, Auth(ctx): Auth, Path(id): Path<String>) -> Result<Json<Media>, HttpError> {
    let media_id = MediaId::parse(&id).ok_or_else(|| HttpError::new(ErrorCode::NotFound, "no such media"))?;
    Ok(Json(s.mesh.call::<api::GetMedia>(&ctx, &ByMedia { media_id }).await?))
}

/// The caller's storage use and quota.
#[utoipa::path(get, path = "/v1/users/me/storage", tag = "media",
    responses((status = 200, body = StorageUsage)), security(("bearer" = [])))]
async fn storage(State(s): S, Auth(ctx): Auth) -> Result<Json<StorageUsage>, HttpError> {
    Ok(Json(s.mesh.call::<api::GetStorage>(&ctx, &Empty {}).await?))
}

/// The bytes of a variant (`thumb`, `medium`, `large`, `poster`, `mp4`). Public: media ids
/// are unguessable. Supports `Range`, `If-None-Match`; immutable, so cacheable for a year.
#[utoipa::path(get, path = "/v1/media/{id}/{variant}", tag = "media", params(("id" = String, Path), ("variant" = String, Path)),
    responses((status = 200, description = "the bytes"), (status = 206, description = "a range of the bytes"),
              (status = 304, description = "not modified"), (status = 404, body = Problem), (status = 416, body = Problem)))]
async fn variant(
    State(s): S,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let not_found = || HttpError::new(ErrorCode::NotFound, "no such media variant");
    let media_id = MediaId::parse(&id).ok_or_else(not_found)?;
    let key = layout::variant(&media_id, &name).ok_or_else(not_found)?;
    let (_, mime) = layout::variant_file(&name).ok_or_else(not_found)?;
    let storage =
        s.storage.as_ref().ok_or_else(|| HttpError::new(ErrorCode::Unavailable, "media storage is not configured"))?;
    let path = ObjectPath::from(key.as_str());

    if s.config.media_redirect
        && let Some(signer) = &storage.signer
    {
        let url = signer
            .signed_url(http::Method::GET, &path, Duration::from_secs(s.config.media_redirect_ttl_secs))
            .await
            .map_err(storage_error)?;
        return Ok(Redirect::temporary(url.as_str()).into_response());
    }

    let meta = match storage.store.head(&path).await {
        Ok(m) => m,
        Err(object_store::Error::NotFound { .. }) => return Err(not_found()),
        Err(e) => return Err(storage_error(e)),
    };
    let etag = format!(
        "\"{}\"",
        meta.e_tag
            .clone()
            .unwrap_or_else(|| format!("{:x}-{:x}", meta.size, meta.last_modified.timestamp()))
            .trim_matches('"')
    );
    let mut common = HeaderMap::new();
    common.insert(header::ETAG, HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"x\"")));
    common.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    common.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    common.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    if let Ok(v) = HeaderValue::from_str(&meta.last_modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string()) {
        common.insert(header::LAST_MODIFIED, v);
    }
    let if_none_match = headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok());
    if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }

    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        // A range is honoured only if it is for this exact version (`If-Range`).
        Some(r) if headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()).is_none_or(|v| v == etag) => {
            match parse_range(r, meta.size) {
                Some(Ok(range)) => Some(range),
                Some(Err(())) => {
                    let mut response = crate::error::problem(ApiError::new(
                        ErrorCode::BadRequest,
                        "the requested range is not satisfiable",
                    ));
                    *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", meta.size)) {
                        response.headers_mut().insert(header::CONTENT_RANGE, v);
                    }
                    return Ok(response);
                }
                None => None,
            }
        }
        _ => None,
    };
    let options = GetOptions { range: range.clone().map(GetRange::Bounded), ..Default::default() };
    let result = storage.store.get_opts(&path, options).await.map_err(|e| match e {
        object_store::Error::NotFound { .. } => not_found(),
        e => storage_error(e),
    })?;
    let body = Body::from_stream(result.into_stream());
    let mut response = Response::new(body);
    *response.headers_mut() = common;
    match range {
        Some(r) => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(r.end - r.start));
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {}-{}/{}", r.start, r.end - 1, meta.size)) {
                headers.insert(header::CONTENT_RANGE, v);
            }
        }
        None => {
            response.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
        }
    }
    Ok(response)
}

/// Parses a single `bytes=` range against an object of `size` bytes. `None`: not a range we
/// serve (several ranges, other units: answered with the whole object); `Some(Err)`: a
/// range outside the object (416).
fn parse_range(header: &str, size: u64) -> Option<Result<std::ops::Range<u64>, ()>> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (start, end) = spec.split_once('-')?;
    let (start, end) = (start.trim(), end.trim());
    let range = match (start.is_empty(), end.is_empty()) {
        (true, false) => {
            let suffix: u64 = end.parse().ok()?;
            if suffix == 0 {
                return Some(Err(()));
            }
            size.saturating_sub(suffix)..size
        }
        (false, _) => {
            let start: u64 = start.parse().ok()?;
            let end: u64 = if end.is_empty() {
                size.saturating_sub(1)
            } else {
                end.parse::<u64>().ok()?.min(size.saturating_sub(1))
            };
            if start >= size || end < start {
                return Some(Err(()));
            }
            start..end + 1
        }
        (true, true) => return None,
    };
    Some(Ok(range))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some(Ok(0..100)));
        assert_eq!(parse_range("bytes=900-", 1000), Some(Ok(900..1000)));
        assert_eq!(parse_range("bytes=-100", 1000), Some(Ok(900..1000)));
        assert_eq!(parse_range("bytes=990-5000", 1000), Some(Ok(990..1000)));
        assert_eq!(parse_range("bytes=1000-", 1000), Some(Err(())));
        assert_eq!(parse_range("bytes=5-2", 1000), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
    }
}
