//! Endpoints one named instance answers: for state only that instance holds (a ranked feed
//! listing kept in its memory), where a queue group would send the request to whichever
//! instance comes first.
//!
//! An instance endpoint is an ordinary typed [`Endpoint`] whose subject gets the instance's
//! name as a last token (`mosaic.feed.v1.ranked_order.<instance>`), served on a plain
//! subscription. Calls carry the caller's context like any other (deadline, trace,
//! identity) and errors travel as the same headers; a call to an instance that is gone
//! fails at once with [`CallError::NoResponders`] instead of waiting for one to appear.

use crate::client::Mesh;
use crate::ctx::Ctx;
use crate::error::{CallError, ServiceError};
use crate::local::{rpc_span, run};
use crate::service::Lifecycle;
use anyhow::Context as _;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt as _;
use mosaic_api::headers as h;
use mosaic_api::{ApiError, Endpoint, ErrorCode};
use std::future::Future;

/// The subject on which `instance` answers `E`.
pub fn subject<E: Endpoint>(instance: &str) -> String {
    format!("{}.{instance}", E::SUBJECT)
}

impl Mesh {
    /// Calls `E` on the instance named `instance`, within `ctx`'s deadline.
    pub async fn call_instance<E: Endpoint>(
        &self,
        ctx: &Ctx,
        instance: &str,
        req: &E::Request,
    ) -> Result<E::Reply, CallError> {
        self.check(crate::component::Use::Instance(E::SUBJECT)).map_err(|e| CallError::Undeclared(e.to_string()))?;
        let msg = self.request_on(&subject::<E>(instance), ctx, req, false).await?;
        Ok(serde_json::from_slice(&msg.payload)?)
    }

    /// Answers `E` addressed to `instance` with `handler` until the lifecycle stops.
    /// Returns once the subscription is in place.
    pub async fn serve_instance<E, F, Fut>(
        &self,
        instance: &str,
        lifecycle: &Lifecycle,
        handler: F,
    ) -> anyhow::Result<()>
    where
        E: Endpoint,
        F: Fn(Ctx, E::Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<E::Reply, ServiceError>> + Send + 'static,
    {
        self.check(crate::component::Use::Instance(E::SUBJECT))?;
        let subject = subject::<E>(instance);
        let mut asks =
            self.client().subscribe(subject.clone()).await.with_context(|| format!("subscribing {subject}"))?;
        self.client().flush().await?;
        let client = self.client().clone();
        let mesh = self.clone();
        let handler = std::sync::Arc::new(handler);
        let shutdown = lifecycle.shutdown().clone();
        let tasks = lifecycle.clone();
        lifecycle.spawn(async move {
            loop {
                let ask = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    a = asks.next() => a,
                };
                let Some(ask) = ask else { return };
                let Some(reply_to) = ask.reply.clone() else { continue };
                let (client, handler, subject, mesh) = (client.clone(), handler.clone(), subject.clone(), mesh.clone());
                tasks.spawn(async move {
                    let ctx = match crate::identity::receive(&mesh, ask.headers.as_ref()).await {
                        Ok(ctx) => ctx,
                        Err(refused) => {
                            let _ = client.publish_with_headers(reply_to, error_headers(&refused), Bytes::new()).await;
                            return;
                        }
                    };
                    if ctx.expired() {
                        return;
                    }
                    let span = rpc_span(&subject, &ctx);
                    let remaining = ctx.remaining();
                    let answer = async {
                        let req = serde_json::from_slice::<E::Request>(&ask.payload).map_err(|e| {
                            ApiError::new(ErrorCode::BadRequest, format!("invalid request for {subject}: {e}"))
                        })?;
                        handler(ctx, req).await
                    };
                    let result = run(&span, remaining, answer).await.unwrap_or_else(|| {
                        Err(ApiError::new(ErrorCode::Timeout, "the deadline passed while handling the request"))
                    });
                    let encoded = result.and_then(|reply| serde_json::to_vec(&reply).map_err(|_| ApiError::internal()));
                    let (headers, body) = match encoded {
                        Ok(body) => (HeaderMap::new(), Bytes::from(body)),
                        Err(e) => (error_headers(&e), Bytes::new()),
                    };
                    if let Err(e) = client.publish_with_headers(reply_to, headers, body).await {
                        tracing::warn!(subject, error = %e, "could not answer an instance request");
                    }
                });
            }
        });
        Ok(())
    }
}

/// The headers an error reply carries (read back by the caller's reply check).
fn error_headers(e: &ApiError) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(h::ERROR_CODE, e.code.as_str());
    headers.insert(h::NATS_SERVICE_ERROR, e.detail.as_str());
    headers.insert(h::NATS_SERVICE_ERROR_CODE, e.status().to_string().as_str());
    headers
}
