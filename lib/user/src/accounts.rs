//! Accounts, sessions and profiles.

use crate::UserService;
use crate::store::accounts::ProfileEdit;
use crate::store::sessions::Refused;
use crate::store::{self, UserRow, user_rid};
use crate::validate;
use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use mosaic_api::endpoint::Empty;
use mosaic_api::user::{
    AccessClaims, AuthReply, ByUser, ByUsername, ChangePasswordRequest, Contact, Jwks, LoginRequest, Me, Profile,
    ProfileUpdated, ProfilesByIds, ProfilesByUsername, RefreshRequest, Revocation, Role, SignedUp, SignupRequest,
    TOKEN_ISSUER, UpdateProfileRequest,
};
use mosaic_api::{ApiError, ErrorCode, Id, SessionId, UserId};
use mosaic_mesh::db::is_conflict;
use mosaic_mesh::outbox::Staged;
use mosaic_mesh::write::{NoRefusal, Write, WriteError};
use mosaic_mesh::{Ctx, ServiceError, ServiceResult};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use surrealdb::types::RecordId;

/// Most ids a batch profile lookup accepts.
const MAX_BATCH: usize = 500;

/// A refresh token as handed to the client, and the hash it is stored under.
struct NewRefresh {
    token: String,
    hash: String,
}

impl NewRefresh {
    fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let hash = token_hash(&token);
        Self { token, hash }
    }
}

fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Revocation-bucket key voiding every token of a session.
pub(crate) fn session_key(session: &SessionId) -> String {
    format!("session.{session}")
}

/// Revocation-bucket key voiding every token of a user issued up to a time.
pub(crate) fn user_key(user: &UserId) -> String {
    format!("user.{user}")
}

impl UserService {
    pub(crate) async fn signup(self: Arc<Self>, ctx: Ctx, req: SignupRequest) -> ServiceResult<AuthReply> {
        let username = validate::username(&req.username)?;
        let email = validate::email(&req.email)?;
        validate::password(&req.password, &username, &email)?;
        let display_name = match req.display_name.as_deref() {
            Some(d) if !d.trim().is_empty() => validate::display_name(d)?,
            _ => username.clone(),
        };
        // Counted before the names are looked up, so the limit also caps probing for taken
        // usernames and emails.
        if let Some(ip) = ctx.client_ip {
            self.signups.take(&mosaic_mesh::ctx::client_network(ip)).await?;
        }
        // Friendly, ordered answers first; the unique indexes below settle races.
        if let Some(taken) = self.taken(&username, &email).await? {
            return Err(taken);
        }
        // Nobody becomes an administrator by choosing a name: operators grant the role.
        let role = Role::User;
        let password_hash = self.passwords.hash(req.password).await?;
        let user_id = UserId::generate();
        let session = SessionId::generate();
        let refresh = NewRefresh::generate();
        let events = vec![Staged::new(SignedUp { user_id: user_id.clone(), username: username.clone() })];
        let result = self
            .outbox
            .write(store::accounts::SIGNUP)
            .bind("uid", user_rid(&user_id))
            .bind("username", username.clone())
            .bind("email", email.clone())
            .bind("hash", password_hash)
            .bind("display_name", display_name)
            .bind("role", role.as_str())
            .bind("sid", RecordId::new("session", session.as_str()))
            .bind("rid", RecordId::new("refresh_token", refresh.hash.as_str()))
            .bind("expires", self.refresh_expiry())
            .stage(events)
            .run::<NoRefusal>()
            .await;
        match result {
            Ok(_) => {}
            // A concurrent signup took the username or email after the checks above: its
            // account is committed (the unique index saw it), so the same checks now name it.
            Err(WriteError::Failed(e)) if !is_conflict(&e) => {
                return Err(match self.taken(&username, &email).await? {
                    Some(taken) => taken,
                    None => anyhow::Error::new(e).context("creating account").into(),
                });
            }
            Err(e) => return Err(anyhow::Error::new(e).context("creating account").into()),
        }
        tracing::info!(user = %user_id, request_id = ?ctx.request_id, "account created");
        let user = store::user_by_id(&self.db, &user_id).await?.context("new account vanished")?;
        self.auth_reply(&user, &session, refresh.token)
    }

    pub(crate) async fn login(self: Arc<Self>, ctx: Ctx, req: LoginRequest) -> ServiceResult<AuthReply> {
        let login = req.login.trim().to_lowercase();
        if login.is_empty() || login.len() > 254 || req.password.len() > 1024 {
            return Err(invalid_credentials());
        }
        self.throttle.attempt(&login, ctx.client_ip).await?;
        let field = if login.contains('@') { "email" } else { "username" };
        let Some(user) = store::user_by_field(&self.db, field, &login).await? else {
            self.passwords.verify_decoy(req.password).await;
            return Err(invalid_credentials());
        };
        if !self.passwords.verify(req.password, user.password_hash.clone()).await? {
            return Err(invalid_credentials());
        }
        if user.suspended {
            return Err(suspended());
        }
        self.throttle.succeeded(&login, ctx.client_ip).await;
        let session = SessionId::generate();
        let refresh = NewRefresh::generate();
        // The transaction checks the suspension again (see `store::sessions::OPEN`).
        let created = Write::new(&self.db, store::sessions::OPEN)
            .bind("uid", user_rid(&user.id()))
            .bind("sid", RecordId::new("session", session.as_str()))
            .bind("rid", RecordId::new("refresh_token", refresh.hash.as_str()))
            .bind("expires", self.refresh_expiry())
            .run::<Refused>()
            .await;
        match created {
            Ok(_) => self.auth_reply(&user, &session, refresh.token),
            Err(WriteError::Refused(Refused::Suspended)) => Err(suspended()),
            Err(e) => Err(anyhow::Error::new(e).context("creating session").into()),
        }
    }

    pub(crate) async fn refresh(self: Arc<Self>, _ctx: Ctx, req: RefreshRequest) -> ServiceResult<AuthReply> {
        let old_hash = token_hash(req.refresh_token.trim());
        let Some(token) = store::sessions::refresh_token(&self.db, &old_hash).await? else {
            return Err(ApiError::unauthorized("refresh token is not valid").into());
        };
        let session = SessionId::from_trusted(token.session.clone());
        if token.revoked {
            return Err(ApiError::unauthorized("this session has ended; log in again").into());
        }
        if token.used {
            self.reuse_detected(&session).await?;
            return Err(reused());
        }
        if token.expires_at <= Utc::now() {
            return Err(ApiError::unauthorized("refresh token has expired; log in again").into());
        }
        let user_id = UserId::from_trusted(token.user.clone());
        let user = store::user_by_id(&self.db, &user_id)
            .await?
            .ok_or_else(|| ApiError::unauthorized("account no longer exists"))?;
        if user.suspended {
            return Err(suspended());
        }
        let refresh = NewRefresh::generate();
        // Of two concurrent refreshes with the same token, one wins and the other is a reuse
        // (see `store::sessions::ROTATE`). Run once: a conflict is the concurrent refresh
        // that won, not something to retry.
        let outcome = Write::new(&self.db, store::sessions::ROTATE)
            .bind("old", RecordId::new("refresh_token", old_hash.as_str()))
            .bind("new", RecordId::new("refresh_token", refresh.hash.as_str()))
            .bind("sid", RecordId::new("session", session.as_str()))
            .bind("uid", user_rid(&user_id))
            .bind("expires", self.refresh_expiry())
            .once()
            .run::<Refused>()
            .await;
        match outcome {
            Ok(_) => self.auth_reply(&user, &session, refresh.token),
            Err(WriteError::Refused(Refused::RefreshTokenReused)) => {
                self.reuse_detected(&session).await?;
                Err(reused())
            }
            Err(WriteError::Failed(e)) if is_conflict(&e) => {
                self.reuse_detected(&session).await?;
                Err(reused())
            }
            Err(e) => Err(anyhow::Error::new(e).context("rotating refresh token").into()),
        }
    }

    pub(crate) async fn logout(self: Arc<Self>, ctx: Ctx, req: RefreshRequest) -> ServiceResult<Empty> {
        let caller = ctx.require_user()?;
        // Unknown or foreign tokens are not an error: logging out is idempotent and must not
        // reveal which tokens exist.
        if let Some(token) = store::sessions::refresh_token(&self.db, &token_hash(req.refresh_token.trim())).await?
            && token.user == caller.as_str()
            && !token.revoked
        {
            self.revoke_sessions(&[SessionId::from_trusted(token.session)], "logout").await?;
        }
        Ok(Empty {})
    }

    pub(crate) async fn jwks(self: Arc<Self>, _ctx: Ctx, _req: Empty) -> ServiceResult<Jwks> {
        Ok(self.keys.jwks().await?)
    }

    pub(crate) async fn me(self: Arc<Self>, ctx: Ctx, _req: Empty) -> ServiceResult<Me> {
        let id = ctx.require_user()?;
        Ok(store::active_user(&self.db, id).await?.me())
    }

    /// A user's address and names, for another service's email (never reaches clients).
    pub(crate) async fn contact(self: Arc<Self>, _ctx: Ctx, req: ByUser) -> ServiceResult<Contact> {
        let user = store::active_user(&self.db, &req.user_id).await?;
        Ok(Contact { user_id: user.id(), username: user.username, display_name: user.display_name, email: user.email })
    }

    /// Every active administrator.
    pub(crate) async fn admins(self: Arc<Self>, _ctx: Ctx, _req: Empty) -> ServiceResult<Vec<UserId>> {
        Ok(store::admins(&self.db).await?)
    }

    pub(crate) async fn update_me(self: Arc<Self>, ctx: Ctx, req: UpdateProfileRequest) -> ServiceResult<Me> {
        let id = ctx.require_user()?.clone();
        let edit = ProfileEdit {
            display_name: req.display_name.as_deref().map(validate::display_name).transpose()?,
            bio: req.bio.as_deref().map(validate::bio).transpose()?,
            topics: req.preferences.as_ref().map(|p| validate::topics(&p.topics)).transpose()?,
        };
        if let Some(write) = store::accounts::edit_profile(&self.outbox, &id, edit) {
            let events = vec![Staged::new(ProfileUpdated { user_id: id.clone() })];
            write.stage(events).run::<NoRefusal>().await.context("updating profile")?;
        }
        Ok(store::active_user(&self.db, &id).await?.me())
    }

    pub(crate) async fn change_password(self: Arc<Self>, ctx: Ctx, req: ChangePasswordRequest) -> ServiceResult<Empty> {
        let id = ctx.require_user()?.clone();
        let user = store::active_user(&self.db, &id).await?;
        self.throttle.attempt(&user.username, ctx.client_ip).await?;
        if !self.passwords.verify(req.current_password, user.password_hash.clone()).await? {
            return Err(ApiError::new(ErrorCode::InvalidCredentials, "current password is wrong").into());
        }
        self.throttle.succeeded(&user.username, ctx.client_ip).await;
        validate::password(&req.new_password, &user.username, &user.email)?;
        let hash = self.passwords.hash(req.new_password).await?;
        let keep = ctx.session().cloned();
        Write::new(&self.db, store::sessions::CHANGE_PASSWORD)
            .bind("uid", user_rid(&id))
            .bind("hash", hash)
            .bind("keep", keep.as_ref().map(|s| RecordId::new("session", s.as_str())))
            .run::<NoRefusal>()
            .await
            .context("changing password")?;
        // Access tokens of the other sessions die at every edge; this session's stay valid.
        self.revocations
            .put_json(
                &user_key(&id),
                &Revocation { not_before_ms: Utc::now().timestamp_millis(), except_session: keep },
            )
            .await?;
        Ok(Empty {})
    }

    pub(crate) async fn profile(self: Arc<Self>, ctx: Ctx, req: ByUsername) -> ServiceResult<Profile> {
        let username = req.username.trim().to_lowercase();
        let user = match store::user_by_field(&self.db, "username", &username).await? {
            Some(u) if !u.suspended => u,
            _ => return Err(ApiError::not_found("no such user").into()),
        };
        let mut profile = user.profile();
        if let Some(viewer) = ctx.user().filter(|v| **v != profile.id) {
            let relation = self.relation(viewer, &profile.id).await?;
            if relation.blocked_by {
                // A blocker is invisible to the users they block.
                return Err(ApiError::not_found("no such user").into());
            }
            profile.viewer = Some(relation);
        }
        Ok(profile)
    }

    pub(crate) async fn profiles(self: Arc<Self>, _ctx: Ctx, req: ProfilesByIds) -> ServiceResult<Vec<Profile>> {
        if req.ids.len() > MAX_BATCH {
            return Err(ApiError::validation(format!("at most {MAX_BATCH} ids per request")).into());
        }
        let rows = store::users_by_ids(&self.db, &req.ids).await?;
        Ok(rows.iter().filter(|u| !u.suspended).map(UserRow::profile).collect())
    }

    pub(crate) async fn lookup_usernames(
        self: Arc<Self>,
        _ctx: Ctx,
        req: ProfilesByUsername,
    ) -> ServiceResult<Vec<Profile>> {
        if req.usernames.len() > MAX_BATCH {
            return Err(ApiError::validation(format!("at most {MAX_BATCH} usernames per request")).into());
        }
        let names: Vec<String> = req.usernames.iter().map(|u| u.trim().to_lowercase()).collect();
        let rows = store::users_by_usernames(&self.db, &names).await?;
        Ok(rows.iter().filter(|u| !u.suspended).map(UserRow::profile).collect())
    }

    /// The answer to a signup whose username or email an account already has, username first.
    async fn taken(&self, username: &str, email: &str) -> anyhow::Result<Option<ServiceError>> {
        if store::user_by_field(&self.db, "username", username).await?.is_some() {
            return Ok(Some(ApiError::new(ErrorCode::UsernameTaken, "this username is already taken").into()));
        }
        if store::user_by_field(&self.db, "email", email).await?.is_some() {
            return Ok(Some(ApiError::new(ErrorCode::EmailTaken, "an account with this email already exists").into()));
        }
        Ok(None)
    }

    fn refresh_expiry(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::seconds(self.config.refresh_token_ttl_secs as i64)
    }

    fn auth_reply(&self, user: &UserRow, session: &SessionId, refresh_token: String) -> ServiceResult<AuthReply> {
        let now = Utc::now();
        let ttl = self.config.access_ttl().as_secs();
        let claims = AccessClaims {
            sub: user.id(),
            sid: session.clone(),
            role: user.role(),
            iat: now.timestamp(),
            iat_ms: now.timestamp_millis(),
            exp: now.timestamp() + ttl as i64,
            iss: TOKEN_ISSUER.to_owned(),
        };
        Ok(AuthReply {
            user: user.me(),
            access_token: self.keys.sign(&claims)?,
            refresh_token,
            token_type: "Bearer".into(),
            expires_in: ttl,
        })
    }

    async fn reuse_detected(&self, session: &SessionId) -> anyhow::Result<()> {
        tracing::warn!(%session, "refresh token reused; revoking its session");
        self.revoke_sessions(std::slice::from_ref(session), "refresh token reused").await
    }

    /// Ends sessions: their refresh tokens stop working here, their access tokens at every
    /// edge (through the revocations bucket).
    pub(crate) async fn revoke_sessions(&self, sessions: &[SessionId], reason: &str) -> anyhow::Result<()> {
        let rids: Vec<RecordId> = sessions.iter().map(|s| RecordId::new("session", s.as_str())).collect();
        Write::new(&self.db, store::sessions::REVOKE)
            .bind("rids", rids)
            .bind("reason", reason.to_owned())
            .run::<NoRefusal>()
            .await
            .context("revoking sessions")?;
        let revocation = Revocation { not_before_ms: Utc::now().timestamp_millis(), except_session: None };
        for session in sessions {
            self.revocations.put_json(&session_key(session), &revocation).await?;
        }
        Ok(())
    }
}

fn invalid_credentials() -> ServiceError {
    ApiError::new(ErrorCode::InvalidCredentials, "wrong login or password").into()
}

fn suspended() -> ServiceError {
    ApiError::new(ErrorCode::AccountSuspended, "this account is suspended").into()
}

fn reused() -> ServiceError {
    ApiError::new(
        ErrorCode::RefreshTokenReused,
        "this refresh token was already used; the session has been ended, log in again",
    )
    .into()
}
