//! The user service: accounts, tokens, profiles, the follow graph, blocks and mutes.

use crate::endpoint::Empty;
use crate::ids::{SessionId, UserId};
use crate::page::{Page, PageRequest};
use crate::stream::EVENTS_USER;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Service name in the micro service API.
pub const SERVICE: &str = "user";

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A regular account.
    #[default]
    User,
    /// May suspend users and remove any content.
    Admin,
}

impl Role {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// What the user wants to see more of; drives feed ranking.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// Topics (tags without `#`), lowercase, at most 50.
    #[serde(default)]
    pub topics: Vec<String>,
}

/// The caller's own profile, with private fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub id: UserId,
    pub username: String,
    pub email: String,
    pub display_name: String,
    pub bio: String,
    pub role: Role,
    pub preferences: Preferences,
    pub followers: u64,
    pub following: u64,
    pub posts: u64,
    pub created_at: DateTime<Utc>,
}

/// How the viewer relates to the profile they look at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Relation {
    /// The viewer follows this user.
    pub following: bool,
    /// This user follows the viewer.
    pub followed_by: bool,
    /// The viewer blocks this user.
    pub blocking: bool,
    /// This user blocks the viewer.
    pub blocked_by: bool,
    /// The viewer mutes this user.
    pub muting: bool,
}

/// Told to every user-service instance after follows, blocks or mutes between `users`
/// changed, so each drops their cached relations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphChanged {
    pub users: Vec<UserId>,
}

impl crate::event::Broadcast for GraphChanged {
    const SUBJECT: &'static str = "mosaic.user.v1.graph_changed";
}

/// A public profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Profile {
    pub id: UserId,
    pub username: String,
    pub display_name: String,
    pub bio: String,
    pub followers: u64,
    pub following: u64,
    pub posts: u64,
    pub created_at: DateTime<Utc>,
    /// The caller's relation to this user (absent when looking at oneself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewer: Option<Relation>,
}

/// `POST /v1/auth/signup`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// 3–30 characters: lowercase letters, digits, `_` and `.`; case-insensitive.
    pub username: String,
    pub email: String,
    /// 10–128 characters, not trivially guessable.
    pub password: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

/// `POST /v1/auth/login`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Username or email.
    pub login: String,
    pub password: String,
}

/// `POST /v1/auth/refresh` and `POST /v1/auth/logout`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// Tokens and the account they belong to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuthReply {
    pub user: Me,
    /// EdDSA-signed JWT; send as `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Single-use; exchange at `/v1/auth/refresh` for a new pair.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// `PATCH /v1/users/me`; absent fields are left unchanged.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProfileRequest {
    /// At most 64 characters.
    #[serde(default)]
    pub display_name: Option<String>,
    /// At most 300 characters.
    #[serde(default)]
    pub bio: Option<String>,
    #[serde(default)]
    pub preferences: Option<Preferences>,
}

/// `PUT /v1/users/me/password`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

/// One public key of the JWK Set (RFC 7517, OKP keys of RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Jwk {
    /// `OKP`.
    pub kty: String,
    /// `Ed25519`.
    pub crv: String,
    /// The public key, base64url without padding.
    pub x: String,
    pub kid: String,
    /// `EdDSA`.
    pub alg: String,
    /// `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}

/// `GET /v1/auth/jwks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// Claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user.
    pub sub: UserId,
    /// The session (refresh-token family).
    pub sid: SessionId,
    pub role: Role,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Issued at in Unix milliseconds: revocations compare at this precision, so a token
    /// minted in the same second as, but after, a revocation stays valid.
    pub iat_ms: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Issuer (`mosaic`).
    pub iss: String,
}

/// Issuer claim of access tokens.
pub const TOKEN_ISSUER: &str = "mosaic";

/// A user named by username.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ByUsername {
    pub username: String,
}

/// A user named by id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ByUser {
    pub user_id: UserId,
}

/// A page of a user's followers or followees.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListGraph {
    pub user_id: UserId,
    #[serde(default)]
    pub page: PageRequest,
}

/// Many users by id, for hydrating lists in other services.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfilesByIds {
    pub ids: Vec<UserId>,
}

/// Many users by username (for resolving `@mentions`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfilesByUsername {
    pub usernames: Vec<String>,
}

/// How `viewer` relates to each of `others`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelationsQuery {
    pub viewer: UserId,
    pub others: Vec<UserId>,
}

/// One entry of a [`RelationsQuery`] reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelationEntry {
    pub user_id: UserId,
    pub relation: Relation,
}

/// Whose content a user must not see or be reached by: everything other services need to
/// apply blocks and mutes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SocialFilters {
    /// Users this user blocks.
    pub blocking: Vec<UserId>,
    /// Users who block this user.
    pub blocked_by: Vec<UserId>,
    /// Users this user mutes.
    pub muting: Vec<UserId>,
}

/// How to reach a user outside the app (for the notification service; never served to
/// clients).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    pub user_id: UserId,
    pub username: String,
    pub display_name: String,
    pub email: String,
}

/// `POST /v1/admin/users/{id}/suspend`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SuspendRequest {
    pub user_id: UserId,
    #[serde(default)]
    pub reason: Option<String>,
}

/// A value of the revocations bucket (see [`crate::stream::REVOCATIONS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Tokens issued at or before this Unix millisecond are void.
    pub not_before_ms: i64,
    /// A session whose tokens stay valid (the one that changed the password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub except_session: Option<SessionId>,
}

/// Most ids an [`Audience`] page or a [`FeedSeed`] carries.
pub const MAX_GRAPH_IDS: u32 = 10_000;

/// A page of the followers who should see an author's posts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AudienceQuery {
    pub author: UserId,
    /// The last id of the previous page.
    #[serde(default)]
    pub after: Option<UserId>,
    /// Page size, at most [`MAX_GRAPH_IDS`].
    pub limit: u32,
}

/// Followers of an author who do not mute them, in id order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AudiencePage {
    pub ids: Vec<UserId>,
    /// Pass as `after` for the next page; `None` on the last one.
    pub next: Option<UserId>,
    /// The author's follower count (mutes included).
    pub followers: u64,
}

/// What the feed service needs to build a reader's feed, in one request.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FeedSeed {
    /// Accounts the reader follows (newest first, at most [`MAX_GRAPH_IDS`]).
    pub following: Vec<UserId>,
    /// Accounts whose posts the reader must not see: blocked either way, or muted.
    pub hidden: Vec<UserId>,
    /// The reader's preferred topics.
    pub topics: Vec<String>,
}

crate::endpoint! {
    /// Creates an account and its first session.
    pub Signup => "user" . "signup" : SignupRequest => AuthReply;
    /// Starts a session with a username or email and a password.
    pub Login => "user" . "login" : LoginRequest => AuthReply;
    /// Exchanges a refresh token for a new pair; reuse revokes the family.
    pub Refresh => "user" . "refresh" : RefreshRequest => AuthReply;
    /// Ends the session of a refresh token.
    pub Logout => "user" . "logout" : RefreshRequest => Empty;
    /// The public keys that verify access tokens.
    pub GetJwks => "user" . "jwks" : Empty => Jwks;
    /// The caller's own profile.
    pub GetMe => "user" . "me" : Empty => Me;
    /// Updates the caller's profile and preferences.
    pub UpdateMe => "user" . "update_me" : UpdateProfileRequest => Me;
    /// Changes the caller's password and ends every other session.
    pub ChangePassword => "user" . "change_password" : ChangePasswordRequest => Empty;
    /// A public profile by username.
    pub GetProfile => "user" . "profile" : ByUsername => Profile;
    /// Public profiles by id (unknown ids are left out).
    pub GetProfiles => "user" . "profiles" : ProfilesByIds => Vec<Profile>;
    /// Public profiles by username (unknown names are left out).
    pub LookupUsernames => "user" . "lookup_usernames" : ProfilesByUsername => Vec<Profile>;
    /// The caller follows a user.
    pub Follow => "user" . "follow" : ByUser => Empty;
    /// The caller unfollows a user.
    pub Unfollow => "user" . "unfollow" : ByUser => Empty;
    /// A user's followers, most recent first.
    pub Followers => "user" . "followers" : ListGraph => Page<Profile>;
    /// Who a user follows, most recent first.
    pub Following => "user" . "following" : ListGraph => Page<Profile>;
    /// The caller blocks a user.
    pub Block => "user" . "block" : ByUser => Empty;
    /// The caller unblocks a user.
    pub Unblock => "user" . "unblock" : ByUser => Empty;
    /// The caller mutes a user.
    pub Mute => "user" . "mute" : ByUser => Empty;
    /// The caller unmutes a user.
    pub Unmute => "user" . "unmute" : ByUser => Empty;
    /// How one user relates to others (for services applying blocks and mutes).
    pub Relations => "user" . "relations" : RelationsQuery => Vec<RelationEntry>;
    /// Everyone a user blocks, is blocked by, or mutes.
    pub Filters => "user" . "filters" : ByUser => SocialFilters;
    /// Admin: suspends a user; their tokens stop working at once.
    pub Suspend => "user" . "suspend" : SuspendRequest => Empty;
    /// Admin: lifts a suspension.
    pub Unsuspend => "user" . "unsuspend" : ByUser => Empty;
    /// Followers who should see an author's posts (for fan-out), a page at a time.
    pub Audience => "user" . "audience" : AudienceQuery => AudiencePage;
    /// A reader's follows, hidden accounts and topics (for feed building).
    pub GetFeedSeed => "user" . "feed_seed" : ByUser => FeedSeed;
    /// A user's email address and names, for email notifications (services only).
    pub GetContact => "user" . "contact" : ByUser => Contact;
    /// Every active administrator (for platform reports).
    pub ListAdmins => "user" . "admins" : Empty => Vec<UserId>;
}

crate::event::events! {
    /// A new account exists.
    SignedUp = "events.user.signed_up" on EVENTS_USER { user_id: UserId, username: String }
    /// `follower` now follows `followee`.
    Followed = "events.user.followed" on EVENTS_USER { follower: UserId, followee: UserId }
    /// `follower` no longer follows `followee`.
    Unfollowed = "events.user.unfollowed" on EVENTS_USER { follower: UserId, followee: UserId }
    /// `blocker` blocked `blocked` (follows both ways were removed).
    Blocked = "events.user.blocked" on EVENTS_USER { blocker: UserId, blocked: UserId }
    /// `blocker` unblocked `blocked`.
    Unblocked = "events.user.unblocked" on EVENTS_USER { blocker: UserId, blocked: UserId }
    /// `muter` muted `muted`.
    Muted = "events.user.muted" on EVENTS_USER { muter: UserId, muted: UserId }
    /// `muter` unmuted `muted`.
    Unmuted = "events.user.unmuted" on EVENTS_USER { muter: UserId, muted: UserId }
    /// An admin suspended the user.
    Suspended = "events.user.suspended" on EVENTS_USER { user_id: UserId }
    /// An admin lifted the user's suspension.
    Unsuspended = "events.user.unsuspended" on EVENTS_USER { user_id: UserId }
    /// An operator made `user_id` an administrator (`mosaic admin grant`).
    AdminGranted = "events.user.admin_granted" on EVENTS_USER { user_id: UserId }
    /// An operator took `user_id`'s administrator role away (`mosaic admin revoke`).
    AdminRevoked = "events.user.admin_revoked" on EVENTS_USER { user_id: UserId }
    /// The user changed profile or preferences.
    ProfileUpdated = "events.user.profile_updated" on EVENTS_USER { user_id: UserId }
}
