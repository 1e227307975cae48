//! Setup of the mix, none of it timed: the graph's users signed up, each friendship followed
//! both ways, seed posts, a pool of ready photos for the posts the timed phase creates, and
//! the wait until the server has worked off the background work all that queued.

use super::SocialLoad;
use super::graph::Graph;
use crate::client::{Account, Edge, phase};
use anyhow::Context as _;
use futures::StreamExt as _;
use image::{DynamicImage, ImageFormat, RgbImage};
use rand::Rng as _;
use rand::rngs::StdRng;
use std::time::{Duration, Instant};

/// A ready photo waiting for the post that will use it (a media item belongs to one post).
pub(super) struct Pooled {
    pub(super) owner: usize,
    pub(super) media_id: String,
}

/// Signs up every node of `graph` (account i is node i), follows each friendship both ways,
/// gives every user `--posts-per-user` posts, and uploads the media pool of the timed phase,
/// whose owners are drawn from `rng`.
pub(super) async fn seed(
    edge: &Edge,
    load: &SocialLoad,
    graph: &Graph,
    prefix: &str,
    nonce: u64,
    rng: &mut StdRng,
) -> anyhow::Result<(Vec<Account>, Vec<Pooled>)> {
    let conc = load.setup_concurrency;

    let mut signed = phase("signed up", (0..graph.nodes).collect(), conc, |i| async move {
        Ok((i, edge.signup(&format!("{prefix}_{i}")).await?))
    })
    .await?;
    signed.sort_by_key(|(i, _)| *i);
    let users: Vec<Account> = signed.into_iter().map(|(_, a)| a).collect();

    let follows: Vec<(usize, usize)> = graph.edges.iter().flat_map(|&(a, b)| [(a, b), (b, a)]).collect();
    {
        let users = &users;
        phase("followed", follows, conc, |(from, to)| edge.follow(&users[from], &users[to].id)).await?;
    }

    let mut seq = 0u64;
    let seeds: Vec<(usize, u64)> = (0..load.posts_per_user)
        .flat_map(|_| 0..users.len())
        .map(|user| {
            seq += 1;
            (user, seq)
        })
        .collect();
    {
        let users = &users;
        phase("seed posts (upload, process, post)", seeds, conc, |(user, n)| async move {
            let media = edge.upload_ready(&users[user], tiny_png(nonce, n)?).await?;
            edge.create_post(&users[user], &media, &format!("seed post {n} #bench")).await
        })
        .await?;
    }

    // Enough for every post the run can create: the expected count plus ten percent and a
    // constant, far beyond the binomial spread of the random mix.
    let total_requests = u64::from(load.rate) * (load.warmup + load.duration);
    let expected_posts = total_requests * u64::from(load.mix.post) / 100;
    let pool_size = if load.mix.post == 0 { 0 } else { expected_posts + expected_posts / 10 + 64 };
    let owners: Vec<(usize, u64)> = (0..pool_size).map(|j| (rng.gen_range(0..users.len()), seq + 1 + j)).collect();
    let pool = {
        let users = &users;
        phase("media pool for new posts (upload, process)", owners, conc, |(owner, n)| async move {
            let media_id = edge.upload_ready(&users[owner], tiny_png(nonce, n)?).await?;
            Ok(Pooled { owner, media_id })
        })
        .await?
    };
    Ok((users, pool))
}

/// Waits until every durable JetStream consumer has worked off its backlog. Setup's 37 624
/// follows queue as many follow notifications and feed reconciliations; timing the mix
/// while they drain would measure setup, not the steady state.
pub(super) async fn settle(load: &SocialLoad) -> anyhow::Result<()> {
    if load.settle_timeout == 0 {
        println!("settle: skipped (--settle-timeout 0); background work from setup may still be running");
        return Ok(());
    }
    let options = match &load.data_dir {
        Some(dir) => {
            let login = mosaic::nats::Credentials::load_or_create(dir)?
                .login(&mosaic_mesh::NatsConfig::default(), mosaic_mesh::authz::ADMIN_USER);
            let password = login.password.map(|p| p.expose().to_owned()).unwrap_or_default();
            async_nats::ConnectOptions::with_user_and_password(mosaic_mesh::authz::ADMIN_USER.to_owned(), password)
        }
        None => async_nats::ConnectOptions::new(),
    };
    let client = options
        .connect(&load.nats_url)
        .await
        .with_context(|| format!("connecting to NATS at {} (--nats-url) to watch the backlog", load.nats_url))?;
    let js = async_nats::jetstream::new(client);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(load.settle_timeout);
    let mut first = None;
    loop {
        let (pending, busiest) = backlog(&js).await?;
        first.get_or_insert(pending);
        if pending == 0 {
            println!(
                "settle: background work drained in {:.1} s ({} messages pending when setup ended)",
                started.elapsed().as_secs_f64(),
                first.unwrap_or(0)
            );
            return Ok(());
        }
        if Instant::now() >= deadline {
            println!(
                "settle: {pending} messages still pending after {} s (most in {busiest}); measuring anyway",
                load.settle_timeout
            );
            return Ok(());
        }
        println!("  settle: {pending} messages pending (most in {busiest})");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Messages not yet handled (pending or awaiting an ack) over every consumer of every
/// stream, and the consumer holding the most.
async fn backlog(js: &async_nats::jetstream::Context) -> anyhow::Result<(u64, String)> {
    let mut total = 0u64;
    let mut busiest = (0u64, String::from("none"));
    let mut names = js.stream_names();
    while let Some(stream) = names.next().await {
        let stream = stream.context("listing streams")?;
        let handle = js.get_stream(&stream).await.with_context(|| format!("opening stream {stream}"))?;
        let mut consumers = handle.consumers();
        while let Some(info) = consumers.next().await {
            let info = info.with_context(|| format!("listing consumers of {stream}"))?;
            let pending = info.num_pending + info.num_ack_pending as u64;
            total += pending;
            if pending > busiest.0 {
                busiest = (pending, format!("{stream}/{}", info.name));
            }
        }
    }
    Ok((total, busiest.1))
}

/// A 64x64 PNG that no other upload of any run shares: its first pixels spell out the run
/// and the index (the content service stores each distinct original once, and identical
/// bytes would not exercise the pipeline).
pub(super) fn tiny_png(nonce: u64, index: u64) -> anyhow::Result<Vec<u8>> {
    let tag: Vec<u8> = nonce.to_le_bytes().into_iter().chain(index.to_le_bytes()).collect();
    let byte = |k: usize| tag.get(k).copied().unwrap_or(0);
    let tint = index.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes();
    let img = RgbImage::from_fn(64, 64, |x, y| {
        let i = (y * 64 + x) as usize;
        if i * 3 < tag.len() {
            image::Rgb([byte(i * 3), byte(i * 3 + 1), byte(i * 3 + 2)])
        } else {
            image::Rgb([
                (x as u8 * 4).wrapping_add(tint[0]),
                (y as u8 * 4).wrapping_add(tint[1]),
                ((x + y) as u8 * 2).wrapping_add(tint[2]),
            ])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img).write_to(&mut out, ImageFormat::Png).context("encoding a PNG")?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photos_differ_by_run_and_index() {
        let a = tiny_png(1, 1).unwrap();
        assert_ne!(a, tiny_png(1, 2).unwrap());
        assert_ne!(a, tiny_png(2, 1).unwrap());
        assert_eq!(image::load_from_memory(&a).unwrap().width(), 64);
    }
}
