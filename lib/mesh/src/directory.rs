//! Who someone is, as other services show them: [`Author`]s by user id, from the user
//! service, with a short-lived cache so a chat message or an inbox page doesn't cost a
//! request per person. A renamed user shows under the old name for at most the cache's
//! lifetime.

use crate::client::Mesh;
use crate::ctx::Ctx;
use crate::error::CallError;
use mosaic_api::UserId;
use mosaic_api::content::Author;
use mosaic_api::user::{GetProfiles, ProfilesByIds};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an author is remembered.
const TTL: Duration = Duration::from_secs(60);

/// A cache of authors in front of the user service.
pub struct Directory {
    mesh: Mesh,
    cache: quick_cache::sync::Cache<UserId, (Instant, Option<Author>)>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").field("cached", &self.cache.len()).finish()
    }
}

impl Directory {
    /// A directory remembering up to `capacity` users.
    pub fn new(mesh: Mesh, capacity: usize) -> Self {
        Self { mesh, cache: quick_cache::sync::Cache::new(capacity.max(16)) }
    }

    /// The authors of `ids` that exist and are not suspended (others are left out), in one
    /// request for those not cached.
    pub async fn authors(&self, ctx: &Ctx, ids: &[UserId]) -> Result<HashMap<UserId, Author>, CallError> {
        let mut out = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match self.cache.get(id) {
                Some((at, found)) if at.elapsed() < TTL => {
                    if let Some(a) = found {
                        out.insert(id.clone(), a);
                    }
                }
                _ => missing.push(id.clone()),
            }
        }
        missing.sort();
        missing.dedup();
        if missing.is_empty() {
            return Ok(out);
        }
        let profiles = self.mesh.call::<GetProfiles>(ctx, &ProfilesByIds { ids: missing.clone() }).await?;
        let now = Instant::now();
        let mut found: HashMap<UserId, Author> = profiles
            .into_iter()
            .map(|p| (p.id.clone(), Author { id: p.id, username: p.username, display_name: p.display_name }))
            .collect();
        for id in missing {
            let author = found.remove(&id);
            self.cache.insert(id.clone(), (now, author.clone()));
            if let Some(a) = author {
                out.insert(id, a);
            }
        }
        Ok(out)
    }

    /// One author, if they exist and are not suspended.
    pub async fn author(&self, ctx: &Ctx, id: &UserId) -> Result<Option<Author>, CallError> {
        Ok(self.authors(ctx, std::slice::from_ref(id)).await?.remove(id))
    }
}
