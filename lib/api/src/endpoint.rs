//! Request/reply endpoints: one definition binds a subject to its request and reply types, so
//! the server and every caller agree by construction.

use serde::{Serialize, de::DeserializeOwned};

/// A request/reply operation served by one service.
///
/// Subjects follow `mosaic.<service>.v1.<name>`; the micro service API serves them under the
/// group `mosaic.<service>.v1` with the endpoint name `<name>`.
pub trait Endpoint: Send + Sync + 'static {
    /// The owning service's name, as registered with the micro service API.
    const SERVICE: &'static str;
    /// The endpoint's name inside the service's `v1` group.
    const NAME: &'static str;
    /// The full NATS subject: `mosaic.<service>.v1.<name>`.
    const SUBJECT: &'static str;
    /// What the caller sends (cloned, not encoded, for a handler in the caller's process).
    type Request: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// What the service answers on success.
    type Reply: Serialize + DeserializeOwned + Send + Sync + 'static;
}

/// The micro-service group prefix of a service: `mosaic.<service>.v1`.
pub fn group(service: &str) -> String {
    format!("mosaic.{service}.v1")
}

/// Declares endpoint marker types.
///
/// ```
/// use mosaic_api::{endpoint, Endpoint};
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// pub struct Ping {}
/// endpoint! {
///     /// Answers with what it was sent.
///     pub Echo => "demo" . "echo" : Ping => Ping;
/// }
/// assert_eq!(Echo::SUBJECT, "mosaic.demo.v1.echo");
/// ```
#[macro_export]
macro_rules! endpoint {
    ($($(#[$meta:meta])* pub $ty:ident => $service:literal . $name:literal : $req:ty => $rep:ty;)+) => {
        $(
            $(#[$meta])*
            #[derive(Debug, Clone, Copy, Default)]
            pub struct $ty;
            impl $crate::endpoint::Endpoint for $ty {
                const SERVICE: &'static str = $service;
                const NAME: &'static str = $name;
                const SUBJECT: &'static str = concat!("mosaic.", $service, ".v1.", $name);
                type Request = $req;
                type Reply = $rep;
            }
        )+
    };
}

/// An empty request or reply body (`{}` on the wire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Empty {}

/// The subjects of a list of endpoints, as a `&'static [&'static str]` (a component's
/// declaration names endpoints by type, never by string).
///
/// ```
/// use mosaic_api::{endpoint, subjects};
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// pub struct Ping {}
/// endpoint! {
///     /// Answers with what it was sent.
///     pub Echo => "demo" . "echo" : Ping => Ping;
/// }
/// const SERVED: &[&str] = subjects![Echo];
/// assert_eq!(SERVED, ["mosaic.demo.v1.echo"]);
/// ```
#[macro_export]
macro_rules! subjects {
    ($($ty:path),* $(,)?) => {
        &[$(<$ty as $crate::endpoint::Endpoint>::SUBJECT),*]
    };
}
