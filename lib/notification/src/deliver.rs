//! Sending: each queued push or email is a job on the `DELIVERY_JOBS` work queue, so any
//! instance sends it, a crash means redelivery, and a failing provider is retried with
//! backoff (honouring its `Retry-After`) until the attempts run out and the job is parked in
//! the dead-letter stream with its reason. A delivery row records the outcome per channel;
//! one that is no longer `queued` is never sent again.

use crate::NotificationService;
use crate::email::{Mail, paragraph};
use crate::push::{Outcome, PushMessage, Target};
use crate::store::deliveries::{self, DeliveryRow};
use crate::store::inbox::NotificationRow;
use crate::store::{delivery_rid, devices, inbox};
use chrono::Utc;
use mosaic_api::content::Author;
use mosaic_api::notification::{Channel, Deliver, DeliveryStatus, SendEmail};
use mosaic_api::user::{ByUser, GetContact};
use mosaic_api::{ApiError, DeviceId, Envelope, ErrorCode, Id as _, UserId};
use mosaic_mesh::jetstream::{Delivery, HandlerError};
use mosaic_mesh::{CallError, Ctx};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use surrealdb::types::RecordId;

/// Title of every push.
const PUSH_TITLE: &str = "Mosaic";

impl NotificationService {
    pub(crate) async fn on_delivery(&self, d: Delivery, max_attempts: i64) -> Result<(), HandlerError> {
        let job: Envelope<Deliver> = serde_json::from_slice(&d.payload)
            .map_err(|e| HandlerError::Permanent(format!("undecodable delivery job: {e}")))?;
        let Deliver { job, channel } = job.data;
        let Some(row) = deliveries::delivery(&self.db, &job, channel).await.map_err(HandlerError::Transient)? else {
            return Err(HandlerError::Permanent(format!("no delivery {job}/{}", channel.as_str())));
        };
        if row.status != "queued" {
            return Ok(());
        }
        let rid = delivery_rid(&job, channel);
        if Utc::now() > row.expires_at {
            return self.finish(&rid, DeliveryStatus::Expired, Some("older than its time-to-live".into())).await;
        }
        let last = d.attempt >= max_attempts;
        let result = match channel {
            Channel::Push => self.send_push(&job, &rid, &row).await,
            Channel::Email => self.send_email(&job, &rid, &row).await,
            Channel::InApp => Ok(()),
        };
        match result {
            Ok(()) => Ok(()),
            Err(HandlerError::Permanent(reason)) => {
                self.finish(&rid, DeliveryStatus::Failed, Some(reason.clone())).await?;
                self.settle_digest(&job, &row, DeliveryStatus::Failed).await?;
                Err(HandlerError::Permanent(reason))
            }
            Err(err) => {
                let reason = match &err {
                    HandlerError::Transient(e) | HandlerError::RetryAfter(_, e) => format!("{e:#}"),
                    HandlerError::Permanent(r) => r.clone(),
                };
                deliveries::attempted(&self.db, &rid, &reason, last).await.map_err(HandlerError::Transient)?;
                if last {
                    self.settle_digest(&job, &row, DeliveryStatus::Failed).await?;
                }
                Err(err)
            }
        }
    }

    /// Sets a delivery's final status.
    async fn finish(&self, rid: &RecordId, status: DeliveryStatus, detail: Option<String>) -> Result<(), HandlerError> {
        deliveries::finish(&self.db, rid, status, detail).await.map_err(HandlerError::Transient)
    }

    /// A digest's pushes share its outcome.
    async fn settle_digest(&self, job: &str, row: &DeliveryRow, status: DeliveryStatus) -> Result<(), HandlerError> {
        if row.items == 0 {
            return Ok(());
        }
        let detail = match status {
            DeliveryStatus::Sent => "sent in the digest at the end of quiet hours",
            _ => "the quiet-hours digest could not be sent",
        };
        deliveries::settle_digest(&self.db, job, status, detail).await.map_err(HandlerError::Transient)
    }

    /// Counts a first attempt of `row` against its recipient's limit of `what` sends in the
    /// current window (`window` formats the time); true when over it. Retries were counted
    /// on their first attempt.
    async fn over_limit(&self, row: &DeliveryRow, what: &str, window: &str, limit: u64) -> Result<bool, HandlerError> {
        if row.attempts > 0 {
            return Ok(false);
        }
        let key = format!("{what}.{}.{}", row.recipient, Utc::now().format(window));
        let n = self.limits.increment(&key).await.map_err(HandlerError::Transient)?;
        Ok(n > limit)
    }

    /// The inbox entry `row` delivers and the profiles of its actors; `None` once the entry
    /// is gone.
    async fn entry(
        &self,
        ctx: &Ctx,
        row: &DeliveryRow,
    ) -> Result<Option<(NotificationRow, HashMap<UserId, Author>)>, HandlerError> {
        let Some(entry) = inbox::entry(&self.db, &row.notification).await.map_err(HandlerError::Transient)? else {
            return Ok(None);
        };
        let authors =
            self.directory.authors(ctx, &entry.actor_ids()).await.map_err(|e| HandlerError::Transient(e.into()))?;
        Ok(Some((entry, authors)))
    }

    async fn send_push(&self, job: &str, rid: &RecordId, row: &DeliveryRow) -> Result<(), HandlerError> {
        if self.over_limit(row, "push", "%Y%m%d%H", self.config.push_per_hour).await? {
            return self.finish(rid, DeliveryStatus::RateLimited, Some("over the hourly push limit".into())).await;
        }
        let user = UserId::from_trusted(row.recipient.clone());
        let ctx = Ctx::new().with_timeout(Duration::from_secs(20));
        let mut data = BTreeMap::new();
        let (body, tag, urgent) = if row.items > 0 {
            data.insert("type".to_owned(), "digest".to_owned());
            let body = match row.items {
                1 => "You have a new notification".to_owned(),
                n => format!("You have {n} new notifications"),
            };
            (body, format!("digest-{}", row.recipient), false)
        } else {
            let Some((entry, authors)) = self.entry(&ctx, row).await? else {
                return self.finish(rid, DeliveryStatus::Expired, Some("the inbox entry is gone".into())).await;
            };
            data.insert("type".to_owned(), entry.kind.clone());
            data.insert("notification_id".to_owned(), entry.key.clone());
            data.insert("subject_id".to_owned(), entry.subject_id.clone());
            (entry.text(&authors), entry.key.clone(), row.urgent)
        };
        let remaining = (row.expires_at - Utc::now()).to_std().unwrap_or_default();
        let message = PushMessage { title: PUSH_TITLE.into(), body, data, tag, ttl: remaining, urgent };

        let devices = devices::of_user(&self.db, &user).await.map_err(HandlerError::Transient)?;
        if devices.is_empty() {
            self.finish(rid, DeliveryStatus::NoRecipient, Some("no push device registered".into())).await?;
            return self.settle_digest(job, row, DeliveryStatus::NoRecipient).await;
        }
        let mut sent = !row.sent_devices.is_empty();
        let mut retry: Option<(Option<Duration>, String)> = None;
        let mut failed: Option<String> = None;
        for device in devices.iter().filter(|d| !row.sent_devices.contains(&d.key)) {
            let (target, sender) = match (device.platform.as_str(), &device.token, &device.endpoint) {
                ("fcm", Some(token), _) => (Target::Fcm { token: token.clone() }, &self.fcm),
                ("webpush", _, Some(endpoint)) => (
                    Target::WebPush {
                        endpoint: endpoint.clone(),
                        p256dh: device.p256dh.clone().unwrap_or_default(),
                        auth: device.auth.clone().unwrap_or_default(),
                    },
                    &self.webpush,
                ),
                _ => continue,
            };
            match sender.send(&target, &message).await {
                Outcome::Sent => {
                    sent = true;
                    deliveries::device_sent(&self.db, rid, &device.key).await.map_err(HandlerError::Transient)?;
                }
                Outcome::Gone(reason) => {
                    tracing::info!(device = %device.key, %reason, "removing a device the provider no longer knows");
                    devices::remove(&self.db, &DeviceId::from_trusted(device.key.clone()))
                        .await
                        .map_err(HandlerError::Transient)?;
                }
                Outcome::Retry { after, reason } => {
                    let longest = match &retry {
                        Some((prev, _)) => after.max(*prev),
                        None => after,
                    };
                    retry = Some((longest, reason));
                }
                Outcome::Failed(reason) => failed = Some(reason),
            }
        }
        if let Some((after, reason)) = retry {
            let err = anyhow::anyhow!(reason);
            return Err(match after {
                Some(after) => HandlerError::RetryAfter(after, err),
                None => HandlerError::Transient(err),
            });
        }
        if sent {
            self.finish(rid, DeliveryStatus::Sent, None).await?;
            return self.settle_digest(job, row, DeliveryStatus::Sent).await;
        }
        match failed {
            Some(reason) => Err(HandlerError::Permanent(reason)),
            None => {
                self.finish(rid, DeliveryStatus::NoRecipient, Some("every device was unregistered".into())).await?;
                self.settle_digest(job, row, DeliveryStatus::NoRecipient).await
            }
        }
    }

    async fn send_email(&self, job: &str, rid: &RecordId, row: &DeliveryRow) -> Result<(), HandlerError> {
        if self.over_limit(row, "email", "%Y%m%d", self.config.email_per_day).await? {
            return self.finish(rid, DeliveryStatus::RateLimited, Some("over the daily email limit".into())).await;
        }
        let user = UserId::from_trusted(row.recipient.clone());
        let ctx = Ctx::new().with_timeout(Duration::from_secs(20));
        let contact = match self.mesh.call::<GetContact>(&ctx, &ByUser { user_id: user.clone() }).await {
            Ok(c) => c,
            Err(CallError::Api(ApiError { code: ErrorCode::NotFound, .. })) => {
                return self
                    .finish(rid, DeliveryStatus::NoRecipient, Some("the account is gone or suspended".into()))
                    .await;
            }
            Err(e) => return Err(HandlerError::Transient(e.into())),
        };
        let (kind, subject, text, html, images) = match &row.email {
            Some(json) => {
                let composed: SendEmail = serde_json::from_str(json)
                    .map_err(|e| HandlerError::Permanent(format!("stored email is unreadable: {e}")))?;
                (composed.kind, composed.subject, composed.text, composed.html, composed.images)
            }
            None => {
                let Some((entry, authors)) = self.entry(&ctx, row).await? else {
                    return self.finish(rid, DeliveryStatus::Expired, Some("the inbox entry is gone".into())).await;
                };
                let summary = entry.text(&authors);
                let link = format!("{}/v1/notifications", self.config.public_url.trim_end_matches('/'));
                let text = format!("Hi {},\n\n{summary}.\n\nSee it in Mosaic: {link}", contact.display_name);
                let html = format!(
                    "{}{}<p><a href=\"{link}\">Open Mosaic</a></p>",
                    paragraph(&format!("Hi {},", contact.display_name)),
                    paragraph(&format!("{summary}."))
                );
                (entry.kind(), summary, text, html, Vec::new())
            }
        };
        let base = format!("{}/v1/notifications/unsubscribe?token=", self.config.public_url.trim_end_matches('/'));
        let mail = Mail {
            to: contact.email,
            to_name: contact.display_name,
            subject,
            text,
            html,
            images,
            message_id: format!("<{job}.email@mosaic>"),
            unsubscribe: format!("{base}{}", self.unsubscribes.token(&user, Some(kind))),
            unsubscribe_all: format!("{base}{}", self.unsubscribes.token(&user, None)),
        };
        match self.mailer.send(mail).await {
            Ok(()) => self.finish(rid, DeliveryStatus::Sent, None).await,
            Err(e) if e.transient => Err(HandlerError::Transient(anyhow::anyhow!(e.reason))),
            Err(e) => Err(HandlerError::Permanent(e.reason)),
        }
    }
}
