//! Email: one layout for every message (text and HTML, inline images), signed unsubscribe
//! links that work without logging in, and the SMTP transport (lettre; STARTTLS or
//! implicit TLS from the URL) behind a trait, with a logging stand-in when none is set.

use crate::config::SmtpConfig;
use anyhow::{Context as _, anyhow};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD as B64URL};
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use mosaic_api::notification::{InlineImage, NotificationType};
use mosaic_api::{Id as _, UserId};
use sha2::Sha256;

/// An email ready to render.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub to_name: String,
    pub subject: String,
    /// Plain-text body (the layout adds greeting and footer).
    pub text: String,
    /// HTML body fragment (the layout wraps it).
    pub html: String,
    pub images: Vec<InlineImage>,
    /// Stable id, so a resent email is recognisable as the same message.
    pub message_id: String,
    /// One-click unsubscribe URL for this type.
    pub unsubscribe: String,
    /// Unsubscribe-from-everything URL.
    pub unsubscribe_all: String,
}

/// Why a send failed.
#[derive(Debug)]
pub struct MailError {
    /// Worth retrying (connection trouble, 4xx from the server).
    pub transient: bool,
    pub reason: String,
}

/// Something that delivers emails.
pub trait Mailer: Send + Sync {
    fn send(&self, mail: Mail) -> BoxFuture<'_, Result<(), MailError>>;
}

/// Logs emails instead of sending them (no SMTP configured).
#[derive(Debug)]
pub struct LogMailer;

impl Mailer for LogMailer {
    fn send(&self, mail: Mail) -> BoxFuture<'_, Result<(), MailError>> {
        tracing::info!(to = %mail.to, subject = %mail.subject, "email (SMTP not configured; logged)");
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Sends over SMTP.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for SmtpMailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpMailer").field("from", &self.from.to_string()).finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// The mailer `config` describes; `None` when no URL is set.
    pub fn from_config(config: &SmtpConfig) -> anyhow::Result<Option<Self>> {
        let url = config.url.expose().trim();
        if url.is_empty() {
            return Ok(None);
        }
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| anyhow!("notification.smtp.url is not usable: {e}"))?
            .timeout(Some(std::time::Duration::from_secs(20)))
            .build();
        let from = config.from.parse().map_err(|e| anyhow!("notification.smtp.from: {e}"))?;
        Ok(Some(Self { transport, from }))
    }

    fn build(&self, mail: Mail) -> anyhow::Result<lettre::Message> {
        let to = Mailbox::new(Some(mail.to_name.clone()), mail.to.parse().context("recipient address")?);
        let (text, html) = layout(&mail);
        let html_part = SinglePart::html(html);
        let body = if mail.images.is_empty() {
            MultiPart::alternative().singlepart(SinglePart::plain(text)).singlepart(html_part)
        } else {
            let mut related = MultiPart::related().singlepart(html_part);
            for image in &mail.images {
                let bytes = STANDARD.decode(&image.base64).context("inline image is not base64")?;
                let mime = ContentType::parse(&image.mime).context("inline image type")?;
                related = related.singlepart(Attachment::new_inline(image.cid.clone()).body(bytes, mime));
            }
            MultiPart::alternative().singlepart(SinglePart::plain(text)).multipart(related)
        };
        let header = |name: &'static str, value: String| HeaderValue::new(HeaderName::new_from_ascii_str(name), value);
        let message = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .message_id(Some(mail.message_id.clone()))
            .raw_header(header("List-Unsubscribe", format!("<{}>", mail.unsubscribe)))
            // RFC 8058: mail clients may unsubscribe with one POST, no page to visit.
            .raw_header(header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click".into()))
            .multipart(body)?;
        Ok(message)
    }
}

impl Mailer for SmtpMailer {
    fn send(&self, mail: Mail) -> BoxFuture<'_, Result<(), MailError>> {
        Box::pin(async move {
            let message = self.build(mail).map_err(|e| MailError { transient: false, reason: format!("{e:#}") })?;
            self.transport.send(message).await.map(|_| ()).map_err(|e| MailError {
                // A permanent (5xx) answer will not change on retry; anything else may.
                transient: !e.is_permanent(),
                reason: e.to_string(),
            })
        })
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The shared layout: the same structure whatever the language, with the body in the
/// middle and the unsubscribe links at the bottom.
fn layout(mail: &Mail) -> (String, String) {
    let text = format!(
        "{}\n\n--\nStop these emails: {}\nStop all emails from Mosaic: {}\n",
        mail.text.trim_end(),
        mail.unsubscribe,
        mail.unsubscribe_all
    );
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title></head>\
         <body style=\"margin:0;background:#f4f4f5;font-family:-apple-system,Segoe UI,Roboto,sans-serif;color:#18181b\">\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\"><tr><td align=\"center\" style=\"padding:24px\">\
         <table role=\"presentation\" width=\"560\" cellpadding=\"0\" cellspacing=\"0\" style=\"background:#fff;border-radius:12px\">\
         <tr><td style=\"padding:20px 24px;font-size:20px;font-weight:600\">Mosaic</td></tr>\
         <tr><td style=\"padding:0 24px 24px 24px;font-size:15px;line-height:1.5\">{body}</td></tr>\
         </table>\
         <p style=\"font-size:12px;color:#71717a\"><a href=\"{unsub}\" style=\"color:#71717a\">Stop these emails</a> · \
         <a href=\"{unsub_all}\" style=\"color:#71717a\">Stop all emails</a></p>\
         </td></tr></table></body></html>",
        title = escape(&mail.subject),
        body = mail.html,
        unsub = escape(&mail.unsubscribe),
        unsub_all = escape(&mail.unsubscribe_all),
    );
    (text, html)
}

/// The HTML fragment of a plain message.
pub fn paragraph(text: &str) -> String {
    format!("<p style=\"margin:0\">{}</p>", escape(text).replace('\n', "<br>"))
}

/// Signs and checks unsubscribe tokens: `base64url(user|type) . base64url(hmac)`. They do
/// not expire: a link in a years-old email must still work.
#[derive(Clone)]
pub struct Unsubscribes {
    secret: Vec<u8>,
}

impl std::fmt::Debug for Unsubscribes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unsubscribes(***)")
    }
}

impl Unsubscribes {
    pub fn new(secret: Vec<u8>) -> Self {
        Self { secret }
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(payload.as_bytes());
        mac
    }

    /// A token that turns off emails of `kind` (all emails when `None`) for `user`.
    pub fn token(&self, user: &UserId, kind: Option<NotificationType>) -> String {
        let payload = format!("{user}|{}", kind.map(|k| k.as_str()).unwrap_or("all"));
        let tag = self.mac(&payload).finalize().into_bytes();
        format!("{}.{}", B64URL.encode(payload), B64URL.encode(tag))
    }

    /// The user and type a token names, if it is one of ours.
    pub fn verify(&self, token: &str) -> Option<(UserId, Option<NotificationType>)> {
        let (payload, tag) = token.split_once('.')?;
        let payload = String::from_utf8(B64URL.decode(payload).ok()?).ok()?;
        let tag = B64URL.decode(tag).ok()?;
        self.mac(&payload).verify_slice(&tag).ok()?;
        let (user, kind) = payload.split_once('|')?;
        let kind = if kind == "all" { None } else { Some(NotificationType::parse(kind)?) };
        Some((UserId::parse(user)?, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsubscribe_tokens_verify_and_resist_tampering() {
        let u = Unsubscribes::new(b"secret".to_vec());
        let user = UserId::generate();
        let token = u.token(&user, Some(NotificationType::Like));
        assert_eq!(u.verify(&token), Some((user.clone(), Some(NotificationType::Like))));
        assert_eq!(u.verify(&u.token(&user, None)), Some((user.clone(), None)));
        let (payload, tag) = token.split_once('.').unwrap();
        let forged = format!("{}.{tag}", B64URL.encode(format!("{}|like", UserId::generate())));
        assert!(u.verify(&forged).is_none());
        assert!(u.verify(&format!("{payload}.AAAA")).is_none());
        assert!(Unsubscribes::new(b"other".to_vec()).verify(&token).is_none());
        assert!(u.verify("garbage").is_none());
    }

    #[test]
    fn the_layout_escapes_the_subject_and_keeps_the_links() {
        let mail = Mail {
            to: "a@example.com".into(),
            to_name: "A".into(),
            subject: "<b>hi</b>".into(),
            text: "Hello".into(),
            html: paragraph("Hello <you>"),
            images: vec![],
            message_id: "<x@mosaic>".into(),
            unsubscribe: "https://m.example/u?token=1".into(),
            unsubscribe_all: "https://m.example/u?token=2".into(),
        };
        let (text, html) = layout(&mail);
        assert!(text.contains("https://m.example/u?token=1"));
        assert!(html.contains("&lt;b&gt;hi&lt;/b&gt;") && html.contains("Hello &lt;you&gt;"));
    }
}
