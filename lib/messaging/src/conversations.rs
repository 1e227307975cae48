//! Conversations: starting them (a 1:1 conversation exists once per pair), listing the
//! caller's by recent activity, group membership.

use crate::MessagingService;
use crate::store::Refused;
use crate::store::{self, conversation_rid, direct_id, member_rid};
use anyhow::Context as _;
use chrono::Utc;
use mosaic_api::endpoint::Empty;
use mosaic_api::messaging::{
    AddMembers, ByConversation, Conversation, ConversationKind, CreateConversationBody, CreatedConversation,
    ListConversations, MAX_GROUP_MEMBERS, MAX_TITLE_CHARS,
};
use mosaic_api::user::{Relations, RelationsQuery};
use mosaic_api::{ApiError, ConversationId, ErrorCode, Id as _, Page, UserId};
use mosaic_mesh::write::{NoRefusal, Write, WriteError};
use mosaic_mesh::{Ctx, ServiceResult};
use std::collections::HashSet;
use std::sync::Arc;

/// `not_found` for conversations the caller is not in: their existence is private.
pub(crate) fn no_such_conversation() -> ApiError {
    ApiError::not_found("no such conversation")
}

impl MessagingService {
    pub(crate) async fn create(
        self: Arc<Self>,
        ctx: Ctx,
        req: CreateConversationBody,
    ) -> ServiceResult<CreatedConversation> {
        let me = ctx.require_user()?.clone();
        let mut others: Vec<UserId> = Vec::new();
        for id in req.member_ids {
            if id != me && !others.contains(&id) {
                others.push(id);
            }
        }
        if others.is_empty() {
            return Err(ApiError::validation("member_ids must name at least one other user").into());
        }
        if others.len() + 1 > MAX_GROUP_MEMBERS {
            return Err(ApiError::validation(format!("a group has at most {MAX_GROUP_MEMBERS} members")).into());
        }
        let title = validate_title(req.title)?;
        self.check_reachable(&ctx, &me, &others).await?;
        let now = Utc::now();
        let direct = others.len() == 1 && title.is_none();
        let id = if direct { direct_id(&me, &others[0]) } else { ConversationId::generate() };
        let users: Vec<UserId> = std::iter::once(&me).chain(&others).cloned().collect();
        let rows = store::new_members(&id, &users, now, 0);
        let result = Write::new(&self.db, store::CREATE_CONVERSATION)
            .bind("conv", conversation_rid(&id))
            .bind("kind", if direct { "direct" } else { "group" })
            .bind("title", title.clone())
            .bind("me", me.to_string())
            .bind("now", now)
            .bind("rows", rows)
            .run::<Refused>()
            .await;
        let created = match result {
            Ok(_) => true,
            // Someone started the same 1:1 at the same moment: it is the one to return.
            Err(WriteError::Refused(Refused::ConversationExists)) if direct => false,
            Err(WriteError::Failed(e)) if direct && e.is_already_exists() => false,
            Err(e) => return Err(anyhow::Error::new(e).context("creating conversation").into()),
        };
        let conversation = self.view(&ctx, &me, &id).await?;
        if created {
            tracing::info!(conversation = %id, members = users.len(), "conversation created");
        }
        Ok(CreatedConversation { conversation, created })
    }

    /// Refuses users who don't exist (or are suspended) and anyone on either side of a
    /// block with the caller.
    async fn check_reachable(&self, ctx: &Ctx, me: &UserId, others: &[UserId]) -> ServiceResult<()> {
        let authors = self.directory.authors(ctx, others).await?;
        if let Some(missing) = others.iter().find(|u| !authors.contains_key(*u)) {
            return Err(ApiError::not_found(format!("no such user: {missing}")).into());
        }
        let relations =
            self.mesh.call::<Relations>(ctx, &RelationsQuery { viewer: me.clone(), others: others.to_vec() }).await?;
        if let Some(r) = relations.iter().find(|r| r.relation.blocking || r.relation.blocked_by) {
            return Err(ApiError::forbidden(format!("you cannot message {}", r.user_id)).into());
        }
        Ok(())
    }

    /// The conversation as `viewer` sees it; `not_found` unless they are an active member.
    pub(crate) async fn view(&self, ctx: &Ctx, viewer: &UserId, id: &ConversationId) -> ServiceResult<Conversation> {
        let Some((row, members, last)) = store::load(&self.db, id).await? else {
            return Err(no_such_conversation().into());
        };
        if !members.iter().any(|m| m.user == viewer.as_str()) {
            return Err(no_such_conversation().into());
        }
        let mut ids: Vec<UserId> = members.iter().map(|m| UserId::from_trusted(m.user.clone())).collect();
        if let Some(l) = &last {
            ids.push(UserId::from_trusted(l.sender.clone()));
        }
        let authors = self.directory.authors(ctx, &ids).await?;
        Ok(store::conversation(&row, &members, last.as_ref(), viewer, &authors))
    }

    pub(crate) async fn conversation(self: Arc<Self>, ctx: Ctx, req: ByConversation) -> ServiceResult<Conversation> {
        let me = ctx.require_user()?.clone();
        self.view(&ctx, &me, &req.conversation_id).await
    }

    pub(crate) async fn conversations(
        self: Arc<Self>,
        ctx: Ctx,
        req: ListConversations,
    ) -> ServiceResult<Page<Conversation>> {
        let me = ctx.require_user()?.clone();
        let (ids, next_cursor) = store::conversations_page(&self.db, &me, &req.page).await?;
        let loaded = store::load_many(&self.db, &ids).await?;
        let mut people: Vec<UserId> = Vec::new();
        for (_, members, last) in loaded.values() {
            people.extend(members.iter().map(|m| UserId::from_trusted(m.user.clone())));
            if let Some(l) = last {
                people.push(UserId::from_trusted(l.sender.clone()));
            }
        }
        let authors = self.directory.authors(&ctx, &people).await?;
        let items = ids
            .iter()
            .filter_map(|id| loaded.get(id.as_str()))
            .map(|(row, members, last)| store::conversation(row, members, last.as_ref(), &me, &authors))
            .collect();
        Ok(Page { items, next_cursor })
    }

    pub(crate) async fn add_members(self: Arc<Self>, ctx: Ctx, req: AddMembers) -> ServiceResult<Conversation> {
        let me = ctx.require_user()?.clone();
        let current = self.view(&ctx, &me, &req.conversation_id).await?;
        if current.kind == ConversationKind::Direct {
            return Err(ApiError::validation("members can only be added to a group").into());
        }
        let present: HashSet<&UserId> = current.members.iter().map(|m| &m.user.id).collect();
        let mut new: Vec<UserId> = Vec::new();
        for id in req.member_ids {
            if !present.contains(&id) && !new.contains(&id) {
                new.push(id);
            }
        }
        if new.is_empty() {
            return Ok(current);
        }
        if current.members.len() + new.len() > MAX_GROUP_MEMBERS {
            return Err(ApiError::validation(format!("a group has at most {MAX_GROUP_MEMBERS} members")).into());
        }
        self.check_reachable(&ctx, &me, &new).await?;
        let now = Utc::now();
        // Joining members start with nothing unread: what was said before is history.
        let rows = store::new_members(&req.conversation_id, &new, now, current.last_seq);
        Write::new(&self.db, store::ADD_MEMBERS)
            .bind("rows", rows)
            .run::<NoRefusal>()
            .await
            .context("adding members")?;
        self.view(&ctx, &me, &req.conversation_id).await
    }

    pub(crate) async fn leave(self: Arc<Self>, ctx: Ctx, req: ByConversation) -> ServiceResult<Empty> {
        let me = ctx.require_user()?.clone();
        let current = self.view(&ctx, &me, &req.conversation_id).await?;
        if current.kind == ConversationKind::Direct {
            return Err(ApiError::new(ErrorCode::ValidationFailed, "a 1:1 conversation cannot be left").into());
        }
        Write::new(&self.db, store::LEAVE)
            .bind("member", member_rid(&req.conversation_id, &me))
            .run::<NoRefusal>()
            .await
            .context("leaving conversation")?;
        Ok(Empty {})
    }
}

fn validate_title(title: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(title) = title else { return Ok(None) };
    let title = title.trim().to_owned();
    if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
        return Err(ApiError::validation(format!("title must be 1 to {MAX_TITLE_CHARS} characters")));
    }
    if title.chars().any(char::is_control) {
        return Err(ApiError::validation("title must not contain control characters"));
    }
    Ok(Some(title))
}
