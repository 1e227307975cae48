//! Media and posts through the edge: real files made in the test, real decoding, real
//! ffmpeg, the object store on disk.

use mosaic_tests::media::{self, BLUE, GPS_MARKER, RED};
use mosaic_tests::{World, WorldOptions, eventually};
use serde_json::{Value, json};
use std::time::Duration;

fn variant<'a>(media: &'a Value, name: &str) -> &'a Value {
    media["variants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {media}"))
}

fn decode(bytes: &[u8]) -> image::DynamicImage {
    image::load_from_memory_with_format(bytes, image::ImageFormat::WebP).expect("variant is WebP")
}

fn close(a: [u8; 3], b: [u8; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) < 40)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_photo_is_oriented_stripped_and_resized() {
    let w = World::start().await;
    let u = w.client.signup("photo").await;
    // Stored landscape 2400×1200, red left / blue right, EXIF "rotate 90° clockwise" and GPS.
    let jpeg = media::jpeg_with_exif(2400, 1200, 6, true);
    assert!(jpeg.windows(8).any(|win| win == GPS_MARKER), "the fixture carries GPS");
    let m = w.client.upload_ready(&u.access_token, "image/jpeg", jpeg).await;
    assert_eq!(m["status"], "ready", "{m}");
    assert_eq!(m["kind"], "image");
    assert_eq!((m["width"].as_u64(), m["height"].as_u64()), (Some(1200), Some(2400)), "orientation applied");
    assert!(m["blurhash"].as_str().is_some_and(|b| b.len() >= 6));

    for (name, long_edge) in [("thumb", 320), ("medium", 1080), ("large", 2048)] {
        let v = variant(&m, name);
        assert_eq!(v["mime"], "image/webp");
        assert_eq!(v["height"], long_edge);
        assert_eq!(v["url"], format!("/v1/media/{}/{name}", m["id"].as_str().unwrap()));
        // Public: no token needed.
        let (status, headers, bytes) = w.client.fetch(v["url"].as_str().unwrap(), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-type"], "image/webp");
        assert_eq!(bytes.len() as u64, v["bytes"].as_u64().unwrap());
        for marker in [&b"Exif"[..], b"EXIF", b"XMP ", b"GPS", &GPS_MARKER] {
            assert!(!bytes.windows(marker.len()).any(|win| win == marker), "{name} leaks {marker:?}");
        }
        let img = decode(&bytes).to_rgb8();
        assert!(img.height() > img.width(), "{name} is portrait");
        let top = img.get_pixel(img.width() / 2, img.height() / 8).0;
        let bottom = img.get_pixel(img.width() / 2, img.height() * 7 / 8).0;
        assert!(
            close(top, RED) && close(bottom, BLUE),
            "{name}: stored-left (red) must end up on top: {top:?} {bottom:?}"
        );
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pngs_keep_alpha_gifs_give_their_first_frame_and_small_images_are_not_upscaled() {
    let w = World::start().await;
    let u = w.client.signup("formats").await;
    let png = w.client.upload_ready(&u.access_token, "image/png", media::png_with_alpha(200, 100)).await;
    assert_eq!(png["status"], "ready", "{png}");
    let large = variant(&png, "large");
    assert_eq!((large["width"].as_u64(), large["height"].as_u64()), (Some(200), Some(100)), "never upscaled");
    let (_, _, bytes) = w.client.fetch(large["url"].as_str().unwrap(), &[]).await;
    let img = decode(&bytes);
    assert!(img.color().has_alpha(), "alpha kept");
    let rgba = img.to_rgba8();
    assert_eq!(rgba.get_pixel(10, 50).0[3], 0, "the transparent half stays transparent");
    assert_eq!(rgba.get_pixel(190, 50).0[3], 255);

    let gif = w.client.upload_ready(&u.access_token, "image/gif", media::animated_gif(64, 64)).await;
    assert_eq!(gif["status"], "ready", "{gif}");
    let (_, _, bytes) = w.client.fetch(variant(&gif, "thumb")["url"].as_str().unwrap(), &[]).await;
    assert!(close(decode(&bytes).to_rgb8().get_pixel(32, 32).0, RED), "first frame");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lies_and_unknown_types_are_415_and_nothing_is_stored() {
    let w = World::start().await;
    let u = w.client.signup("liar").await;
    let png = media::png_with_alpha(20, 20);
    w.client.upload(&u.access_token, "image/jpeg", png.clone()).await.assert_problem(415, "unsupported_media_type");
    w.client
        .upload(&u.access_token, "image/png", b"<html><script>alert(1)</script></html>".to_vec())
        .await
        .assert_problem(415, "unsupported_media_type");
    w.client
        .upload(&u.access_token, "application/pdf", b"%PDF-1.7 ...".to_vec())
        .await
        .assert_problem(415, "unsupported_media_type");
    w.client.upload(&u.access_token, "video/mp4", png).await.assert_problem(415, "unsupported_media_type");
    w.client.upload(&u.access_token, "image/png", Vec::new()).await.assert_problem(422, "validation_failed");
    let usage = w.client.get("/v1/users/me/storage", &u.access_token).await;
    assert_eq!(usage.body["used_bytes"], 0);
    assert_eq!(usage.body["media_count"], 0);
    // Without a token nothing is accepted at all.
    let r = w.client.send(reqwest::Method::POST, "/v1/media", None, None).await;
    r.assert_problem(401, "unauthorized");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_and_hostile_images_fail_cleanly() {
    let w = World::start().await;
    let u = w.client.signup("broken").await;
    let jpeg = media::jpeg_with_exif(800, 600, 1, false);
    let truncated = jpeg[..jpeg.len() / 2].to_vec();
    let m = w.client.upload_ready(&u.access_token, "image/jpeg", truncated).await;
    assert_eq!((m["status"].as_str(), m["error"].as_str()), (Some("failed"), Some("corrupt_file")), "{m}");

    let bomb = media::png_bomb(50_000, 50_000);
    assert!(bomb.len() < 100);
    let m = w.client.upload_ready(&u.access_token, "image/png", bomb).await;
    assert_eq!((m["status"].as_str(), m["error"].as_str()), (Some("failed"), Some("too_many_pixels")), "{m}");

    let garbage_png = [b"\x89PNG\r\n\x1a\n".to_vec(), vec![0x42; 500]].concat();
    let m = w.client.upload_ready(&u.access_token, "image/png", garbage_png).await;
    assert_eq!(m["status"], "failed", "{m}");
    // The service is fine afterwards.
    let ok = w.client.upload_ready(&u.access_token, "image/jpeg", jpeg).await;
    assert_eq!(ok["status"], "ready");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_over_the_limit_are_413() {
    let options = WorldOptions::default().set("content.max_image_bytes", 50_000);
    let w = World::start_with(options).await;
    let u = w.client.signup("big").await;
    let mut big = media::jpeg_with_exif(64, 64, 1, false);
    big.extend(vec![0u8; 60_000]);
    w.client.upload(&u.access_token, "image/jpeg", big.clone()).await.assert_problem(413, "payload_too_large");
    // Without a Content-Length the limit is enforced while streaming.
    let stream =
        futures::stream::iter(big.chunks(8192).map(|c| Ok::<_, std::io::Error>(c.to_vec())).collect::<Vec<_>>());
    let res = w
        .client
        .http()
        .post(format!("{}/v1/media", w.base()))
        .bearer_auth(&u.access_token)
        .header("content-type", "image/jpeg")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    mosaic_tests::Client::read(res).await.assert_problem(413, "payload_too_large");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_quota_is_enforced_and_readable() {
    let options = WorldOptions::default().set("content.quota_bytes", 60_000);
    let w = World::start_with(options).await;
    let u = w.client.signup("quota").await;
    let photo = media::jpeg_with_exif(400, 300, 1, false);
    let size = photo.len() as u64;
    assert!(size < 30_000, "{size}");
    w.client.upload_ready(&u.access_token, "image/jpeg", photo.clone()).await;
    let usage = w.client.get("/v1/users/me/storage", &u.access_token).await;
    assert_eq!(usage.body["used_bytes"], size);
    assert_eq!(usage.body["limit_bytes"], 60_000);
    assert_eq!(usage.body["media_count"], 1);
    let mut big = photo.clone();
    big.extend(vec![0u8; 60_000 - 2 * photo.len() + 1]);
    w.client.upload(&u.access_token, "image/jpeg", big).await.assert_problem(413, "quota_exceeded");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_bytes_are_stored_once() {
    let w = World::start().await;
    let a = w.client.signup("dupa").await;
    let b = w.client.signup("dupb").await;
    let photo = media::jpeg_with_exif(300, 200, 1, false);
    let m1 = w.client.upload_ready(&a.access_token, "image/jpeg", photo.clone()).await;
    let m2 = w.client.upload_ready(&b.access_token, "image/jpeg", photo).await;
    assert_ne!(m1["id"], m2["id"], "two media items");
    let blobs = std::fs::read_dir(w.media_dir().join("blobs")).unwrap().count();
    assert_eq!(blobs, 1, "one stored original for identical bytes");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_support_range_etag_and_caching() {
    let w = World::start().await;
    let u = w.client.signup("ranges").await;
    let m = w.client.upload_ready(&u.access_token, "image/jpeg", media::jpeg_with_exif(1200, 900, 1, false)).await;
    let url = variant(&m, "medium")["url"].as_str().unwrap().to_owned();
    let (status, headers, full) = w.client.fetch(&url, &[]).await;
    assert_eq!(status, 200);
    assert!(headers["cache-control"].to_str().unwrap().contains("immutable"));
    assert_eq!(headers["accept-ranges"], "bytes");
    let etag = headers["etag"].to_str().unwrap().to_owned();

    let (status, headers, part) = w.client.fetch(&url, &[("range", "bytes=10-19")]).await;
    assert_eq!(status, 206);
    assert_eq!(&part[..], &full[10..20]);
    assert_eq!(headers["content-range"], format!("bytes 10-19/{}", full.len()));
    let (status, _, tail) = w.client.fetch(&url, &[("range", "bytes=-5")]).await;
    assert_eq!((status.as_u16(), &tail[..]), (206, &full[full.len() - 5..]));
    let (status, headers, _) = w.client.fetch(&url, &[("range", &format!("bytes={}-", full.len() + 10))]).await;
    assert_eq!(status, 416);
    assert_eq!(headers["content-range"], format!("bytes */{}", full.len()));
    let (status, _, body) = w.client.fetch(&url, &[("if-none-match", &etag)]).await;
    assert_eq!((status.as_u16(), body.len()), (304, 0));
    let (status, _, body) = w.client.fetch(&url, &[("range", "bytes=0-3"), ("if-range", "\"stale\"")]).await;
    assert_eq!((status.as_u16(), body.len()), (200, full.len()), "a stale If-Range gets the whole object");

    let id = m["id"].as_str().unwrap();
    for bad in [
        format!("/v1/media/{id}/original"),
        format!("/v1/media/{id}/..%2F..%2Fblobs"),
        "/v1/media/nope/thumb".to_owned(),
    ] {
        let (status, _, _) = w.client.fetch(&bad, &[]).await;
        assert_eq!(status, 404, "{bad}");
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_video_becomes_a_streamable_mp4_with_a_poster() {
    let w = World::start().await;
    let dir = tempfile::tempdir().unwrap();
    let u = w.client.signup("video").await;
    // Stored 640×360 with a 90° display rotation: it plays as 360×640.
    let mp4 = media::video(dir.path(), "in.mp4", 2, 640, 360, Some(90));
    let m = w.client.upload_ready(&u.access_token, "video/mp4", mp4).await;
    assert_eq!(m["status"], "ready", "{m}");
    assert_eq!(m["kind"], "video");
    assert!((1800..=2300).contains(&m["duration_ms"].as_u64().unwrap()), "{m}");
    assert_eq!((m["width"].as_u64(), m["height"].as_u64()), (Some(360), Some(640)), "rotation applied");
    let video = variant(&m, "mp4");
    assert_eq!(video["mime"], "video/mp4");
    let (status, headers, bytes) = w.client.fetch(video["url"].as_str().unwrap(), &[]).await;
    assert_eq!((status.as_u16(), headers["content-type"].to_str().unwrap()), (200, "video/mp4"));
    let moov = bytes.windows(4).position(|w| w == b"moov").unwrap();
    let mdat = bytes.windows(4).position(|w| w == b"mdat").unwrap();
    assert!(moov < mdat, "fast start: the index comes before the media data");
    let probe = media::ffprobe(dir.path(), &bytes);
    let streams = probe["streams"].as_array().unwrap();
    let v = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    assert_eq!((v["codec_name"].as_str(), v["pix_fmt"].as_str()), (Some("h264"), Some("yuv420p")));
    assert_eq!((v["width"].as_u64(), v["height"].as_u64()), (Some(360), Some(640)));
    assert!(
        v.get("side_data_list").is_none_or(|s| !s.to_string().contains("rotation")),
        "no rotation left to apply: {v}"
    );
    assert_eq!(streams.iter().find(|s| s["codec_type"] == "audio").unwrap()["codec_name"], "aac");
    assert!(probe["format"]["tags"].get("rotate").is_none());
    for name in ["poster", "thumb"] {
        let (status, _, bytes) = w.client.fetch(variant(&m, name)["url"].as_str().unwrap(), &[]).await;
        assert_eq!(status, 200);
        let img = decode(&bytes);
        assert!(img.height() > img.width(), "{name} is portrait");
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_video_fails_cleanly() {
    let w = World::start().await;
    let u = w.client.signup("notvideo").await;
    let fake = [b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom".to_vec(), vec![0x5a; 4000]].concat();
    let m = w.client.upload_ready(&u.access_token, "video/mp4", fake).await;
    assert_eq!(m["status"], "failed", "{m}");
    assert_eq!(m["error"], "not_a_video");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_streams_with_flat_memory() {
    let w = World::start().await;
    let u = w.client.signup("stream").await;
    let before = peak_rss_kib();
    const TOTAL: usize = 256 * 1024 * 1024;
    let header = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom".to_vec();
    let chunks = std::iter::once(header).chain(std::iter::repeat_n(vec![0x11u8; 1 << 20], TOTAL >> 20));
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks.map(Ok::<_, std::io::Error>)));
    let res = w
        .client
        .http()
        .post(format!("{}/v1/media", w.base()))
        .bearer_auth(&u.access_token)
        .header("content-type", "video/mp4")
        .body(body)
        .send()
        .await
        .unwrap();
    mosaic_tests::Client::read(res).await.assert_status(202);
    let grown = peak_rss_kib().saturating_sub(before);
    assert!(grown < 96 * 1024, "peak memory grew by {grown} KiB for a 256 MiB upload");
    w.stop().await;
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_are_created_read_listed_and_deleted_with_their_media() {
    let w = World::start().await;
    let author = w.client.signup("author").await;
    let friend = w.client.signup("friend").await;
    let stranger = w.client.signup("stranger").await;
    let m1 = w.client.upload_ready(&author.access_token, "image/jpeg", media::jpeg_with_exif(640, 480, 1, false)).await;
    let m2 = w.client.upload_ready(&author.access_token, "image/png", media::png_with_alpha(300, 300)).await;
    let caption = format!("Golden hour with @{} and @nobody_by_that_name #Sunset #beach", friend.username);
    let r = w
        .client
        .post(
            "/v1/posts",
            Some(&author.access_token),
            json!({"caption": caption, "media_ids": [m1["id"], m2["id"]], "tags": ["travel"]}),
        )
        .await;
    r.assert_status(201);
    let post = r.body.clone();
    assert_eq!(post["author"]["id"], author.id);
    assert_eq!(post["tags"], json!(["sunset", "beach", "travel"]));
    assert_eq!(post["mentions"], json!([{"id": friend.id, "username": friend.username}]));
    assert_eq!(post["media"].as_array().unwrap().len(), 2);
    assert_eq!(post["media"][0]["id"], m1["id"]);
    assert_eq!((post["like_count"].as_u64(), post["liked_by_me"].as_bool()), (Some(0), Some(false)));

    let id = post["id"].as_str().unwrap();
    assert_eq!(w.client.get(&format!("/v1/posts/{id}"), &stranger.access_token).await.body["caption"], caption);
    // The media is in a post now: it cannot be posted again.
    w.client
        .post("/v1/posts", Some(&author.access_token), json!({"caption": "", "media_ids": [m1["id"]]}))
        .await
        .assert_problem(409, "conflict");
    // The author's post count follows the events.
    assert!(
        eventually(Duration::from_secs(5), || async {
            w.client.get("/v1/users/me", &author.access_token).await.body["posts"] == 1
        })
        .await
    );

    let timeline = w.client.get(&format!("/v1/users/{}/posts", author.id), &friend.access_token).await;
    assert_eq!(timeline.body["items"][0]["id"], id);

    w.client.delete(&format!("/v1/posts/{id}"), &stranger.access_token).await.assert_problem(403, "forbidden");
    w.client.delete(&format!("/v1/posts/{id}"), &author.access_token).await.assert_status(204);
    w.client.get(&format!("/v1/posts/{id}"), &author.access_token).await.assert_problem(404, "not_found");
    w.client.delete(&format!("/v1/posts/{id}"), &author.access_token).await.assert_problem(404, "not_found");
    let thumb = variant(&m1, "thumb")["url"].as_str().unwrap().to_owned();
    assert!(
        eventually(Duration::from_secs(10), || async { w.client.fetch(&thumb, &[]).await.0 == 404 }).await,
        "the deleted post's media leaves storage"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            w.client.get("/v1/users/me", &author.access_token).await.body["posts"] == 0
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            w.client.get("/v1/users/me/storage", &author.access_token).await.body["used_bytes"] == 0
        })
        .await,
        "quota released"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_refuse_other_peoples_unready_or_unknown_media() {
    let w = World::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = w.client.signup("owner").await;
    let b = w.client.signup("thief").await;
    let mine = w.client.upload_ready(&a.access_token, "image/jpeg", media::jpeg_with_exif(200, 200, 1, false)).await;
    w.client
        .post("/v1/posts", Some(&b.access_token), json!({"caption": "mine now", "media_ids": [mine["id"]]}))
        .await
        .assert_problem(403, "forbidden");
    w.client
        .post("/v1/posts", Some(&a.access_token), json!({"caption": "x", "media_ids": ["doesnotexist"]}))
        .await
        .assert_problem(404, "not_found");
    w.client
        .post("/v1/posts", Some(&a.access_token), json!({"caption": "x", "media_ids": []}))
        .await
        .assert_problem(422, "validation_failed");
    w.client
        .post("/v1/posts", Some(&a.access_token), json!({"caption": "x".repeat(2201), "media_ids": [mine["id"]]}))
        .await
        .assert_problem(422, "validation_failed");
    // A video is still processing right after its upload.
    let up =
        w.client.upload(&a.access_token, "video/mp4", media::video(dir.path(), "slow.mp4", 4, 1280, 720, None)).await;
    up.assert_status(202);
    w.client
        .post("/v1/posts", Some(&a.access_token), json!({"caption": "", "media_ids": [up.body["id"]]}))
        .await
        .assert_problem(409, "media_not_ready");
    // Others cannot see processing media; the owner can.
    w.client
        .get(&format!("/v1/media/{}", up.body["id"].as_str().unwrap()), &b.access_token)
        .await
        .assert_problem(404, "not_found");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_users_see_neither_posts_nor_timelines_and_cannot_be_mentioned() {
    let w = World::start().await;
    let a = w.client.signup("blk_a").await;
    let b = w.client.signup("blk_b").await;
    let m = w.client.upload_ready(&a.access_token, "image/jpeg", media::jpeg_with_exif(100, 100, 1, false)).await;
    w.client.put(&format!("/v1/users/{}/block", b.id), &a.access_token).await.assert_status(204);
    let post = w
        .client
        .post(
            "/v1/posts",
            Some(&a.access_token),
            json!({"caption": format!("hi @{}", b.username), "media_ids": [m["id"]]}),
        )
        .await;
    post.assert_status(201);
    assert_eq!(post.body["mentions"], json!([]), "a blocked user is not mentioned");
    let id = post.body["id"].as_str().unwrap();
    w.client.get(&format!("/v1/posts/{id}"), &b.access_token).await.assert_problem(404, "not_found");
    w.client.get(&format!("/v1/users/{}/posts", a.id), &b.access_token).await.assert_problem(404, "not_found");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timelines_page_newest_first() {
    let w = World::start().await;
    let u = w.client.signup("pages").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let m = w.client.upload_ready(&u.access_token, "image/jpeg", media::jpeg_with_exif(50 + i, 50, 1, false)).await;
        let p = w
            .client
            .post("/v1/posts", Some(&u.access_token), json!({"caption": format!("post {i}"), "media_ids": [m["id"]]}))
            .await;
        ids.push(p.body["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut path = format!("/v1/users/{}/posts?limit=2", u.id);
    loop {
        let page = w.client.get(&path, &u.access_token).await;
        page.assert_status(200);
        seen.extend(page.body["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_owned()));
        match page.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/users/{}/posts?limit=2&cursor={c}", u.id),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_means_redelivery_and_a_finished_job() {
    let mut w = World::start().await;
    let dir = tempfile::tempdir().unwrap();
    let u = w.client.signup("crash").await;
    let up =
        w.client.upload(&u.access_token, "video/mp4", media::video(dir.path(), "long.mp4", 6, 1280, 720, None)).await;
    up.assert_status(202);
    let id = up.body["id"].as_str().unwrap().to_owned();
    // Wait until the (only) worker holds the job, then kill that instance.
    let js = async_nats::jetstream::new(w.nats.connect().await);
    let holding = eventually(Duration::from_secs(10), || async {
        let mut c: async_nats::jetstream::consumer::PullConsumer =
            js.get_consumer_from_stream("content-workers", "MEDIA_JOBS").await.unwrap();
        c.info().await.map(|i| i.num_ack_pending == 1).unwrap_or(false)
    })
    .await;
    assert!(holding, "the worker never picked the job up");
    w.take_instance("content").abort().await;
    w.add_instance("content").await.unwrap();
    let m = w.client.wait_media(&u.access_token, &id).await;
    assert_eq!(m["status"], "ready", "{m}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_fails_every_time_ends_failed_and_in_the_dead_letters() {
    let w = World::start_with(WorldOptions::default()).await;
    let u = w.client.signup("poison").await;
    // Stop the worker from ever reading the original: every attempt fails.
    let photo = media::jpeg_with_exif(120, 90, 1, false);
    let up = w.client.upload(&u.access_token, "image/jpeg", photo).await;
    up.assert_status(202);
    let id = up.body["id"].as_str().unwrap().to_owned();
    let _ = std::fs::remove_dir_all(w.media_dir().join("blobs"));
    let m = w.client.wait_media(&u.access_token, &id).await;
    if m["status"] == "ready" {
        // The worker won the race against the deletion; nothing left to test here.
        w.stop().await;
        return;
    }
    assert_eq!((m["status"].as_str(), m["error"].as_str()), (Some("failed"), Some("too_many_attempts")), "{m}");
    let js = async_nats::jetstream::new(w.nats.connect().await);
    let parked = eventually(Duration::from_secs(10), || async {
        match js.get_stream("DEAD_LETTERS").await {
            Ok(s) => s.get_last_raw_message_by_subject("dlq.MEDIA_JOBS.content-workers").await.is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(parked, "the job is in the dead-letter stream");
    // The queue is not blocked: the next upload is processed.
    let ok = w.client.upload_ready(&u.access_token, "image/png", media::png_with_alpha(40, 40)).await;
    assert_eq!(ok["status"], "ready");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_never_posted_is_swept_after_its_time() {
    let options = WorldOptions::default().set("content.unattached_ttl_secs", 1).set("content.sweep_interval_secs", 1);
    let w = World::start_with(options).await;
    let u = w.client.signup("sweep").await;
    let m = w.client.upload_ready(&u.access_token, "image/jpeg", media::jpeg_with_exif(100, 80, 1, false)).await;
    let thumb = variant(&m, "thumb")["url"].as_str().unwrap().to_owned();
    assert!(eventually(Duration::from_secs(10), || async { w.client.fetch(&thumb, &[]).await.0 == 404 }).await);
    assert!(
        eventually(Duration::from_secs(5), || async {
            w.client.get("/v1/users/me/storage", &u.access_token).await.body["media_count"] == 0
        })
        .await
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            std::fs::read_dir(w.media_dir().join("blobs")).map(|d| d.count() == 0).unwrap_or(true)
        })
        .await,
        "the original is gone too"
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcode_past_its_time_limit_fails_with_timeout() {
    let options = WorldOptions::default().set("content.video_time_limit_secs", 1);
    let w = World::start_with(options).await;
    let dir = tempfile::tempdir().unwrap();
    let u = w.client.signup("slowvideo").await;
    let m = w
        .client
        .upload_ready(&u.access_token, "video/mp4", media::video(dir.path(), "long.mp4", 20, 1920, 1080, None))
        .await;
    assert_eq!((m["status"].as_str(), m["error"].as_str()), (Some("failed"), Some("timeout")), "{m}");
    w.stop().await;
}

/// Profile post counts are fed by post events, in batches: repeated deliveries, a post
/// created and deleted within one batch, and a deletion of a post never counted all end
/// at the exact count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_counts_stay_exact_under_repeated_and_batched_events() {
    use mosaic_api::content::{PostCreated, PostDeleted};
    use mosaic_api::stream::EVENTS_POST;
    use mosaic_api::{Envelope, Id as _, PostId, UserId};
    let w = World::start().await;
    let author = w.client.signup("counted").await;
    let user = UserId::parse(&author.id).unwrap();
    let (a, b, c, never) = (PostId::generate(), PostId::generate(), PostId::generate(), PostId::generate());
    let created = |p: &PostId| PostCreated {
        post_id: p.clone(),
        author: user.clone(),
        tags: vec![],
        created_at: chrono::Utc::now(),
    };
    let deleted = |p: &PostId| PostDeleted { post_id: p.clone(), author: user.clone() };
    // Each envelope has its own event id, so JetStream keeps the repeats as a redelivery would.
    for p in [&a, &a, &b, &c, &b] {
        w.mesh.publish_event(&Envelope::new(created(p))).await.unwrap();
    }
    for p in [&a, &never, &a] {
        w.mesh.publish_event(&Envelope::new(deleted(p))).await.unwrap();
    }
    let count = || async { w.client.get("/v1/users/me", &author.access_token).await.body["posts"].clone() };
    // Intermediate counts pass through the expected ones, so the events are worked off first.
    let js = async_nats::jetstream::new(w.mesh.client().clone());
    let drained = || async {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            js.get_consumer_from_stream("user-post-counts", EVENTS_POST.name).await.unwrap();
        let info = consumer.info().await.unwrap();
        info.num_pending == 0 && info.num_ack_pending == 0
    };
    assert!(eventually(Duration::from_secs(10), drained).await, "the counter works the events off");
    assert!(eventually(Duration::from_secs(5), || async { count().await == 2 }).await, "count {}", count().await);
    // Late repeats change nothing.
    w.mesh.publish_event(&Envelope::new(created(&b))).await.unwrap();
    w.mesh.publish_event(&Envelope::new(deleted(&never))).await.unwrap();
    w.mesh.publish_event(&Envelope::new(deleted(&a))).await.unwrap();
    assert!(eventually(Duration::from_secs(10), drained).await, "the counter works the repeats off");
    assert!(eventually(Duration::from_secs(5), || async { count().await == 2 }).await, "count {}", count().await);
    w.stop().await;
}
