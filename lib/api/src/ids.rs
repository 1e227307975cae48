//! Opaque identifiers.
//!
//! Ids appear in NATS subjects (`push.user.<id>`) and database record keys, so they are
//! restricted to `[A-Za-z0-9_-]` and 1..=64 bytes; anything else is rejected at parse time.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Common behaviour of the id newtypes.
pub trait Id: Sized {
    /// Wraps a string that is already known to be valid.
    fn from_trusted(s: String) -> Self;
    /// The id as a string slice.
    fn as_str(&self) -> &str;

    /// A new time-ordered id (UUIDv7, 32 lowercase hex digits).
    fn generate() -> Self {
        Self::from_trusted(uuid::Uuid::now_v7().simple().to_string())
    }

    /// Parses untrusted input; `None` when it cannot be an id.
    fn parse(s: &str) -> Option<Self> {
        is_valid_id(s).then(|| Self::from_trusted(s.to_owned()))
    }
}

/// Whether `s` has the shape of an id.
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

macro_rules! id_type {
    ($($(#[$meta:meta])* $name:ident;)+) => {$(
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String)]
        pub struct $name(String);

        impl Id for $name {
            fn from_trusted(s: String) -> Self { Self(s) }
            fn as_str(&self) -> &str { &self.0 }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                if is_valid_id(&s) {
                    Ok(Self(s))
                } else {
                    Err(serde::de::Error::custom(concat!("invalid ", stringify!($name))))
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(&self.0) }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str { &self.0 }
        }
    )+};
}

id_type! {
    /// A user account.
    UserId;
    /// A login session: one refresh-token family and the access tokens minted from it.
    SessionId;
    /// A domain event; also its JetStream `Nats-Msg-Id`.
    EventId;
    /// An uploaded photo or video.
    MediaId;
    /// A post.
    PostId;
    /// An upload in progress (its staging object).
    UploadId;
    /// A comment on a post.
    CommentId;
    /// A chat conversation (1:1 or group).
    ConversationId;
    /// A chat message.
    MessageId;
    /// An inbox entry of the notification service.
    NotificationId;
    /// A registered push device.
    DeviceId;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_unique() {
        let a = UserId::generate();
        let b = UserId::generate();
        assert_ne!(a, b);
        assert!(is_valid_id(a.as_str()));
    }

    #[test]
    fn subject_breaking_characters_are_rejected() {
        for bad in ["", "a.b", "a b", "a*", ">", "x\u{e9}", &"a".repeat(65)] {
            assert!(UserId::parse(bad).is_none(), "{bad:?} accepted");
            assert!(serde_json::from_value::<UserId>(serde_json::json!(bad)).is_err());
        }
        assert!(UserId::parse("0190a1b2-C3_d4").is_some());
    }
}
