//! The S3 storage path against a real S3-compatible server (moto).

use mosaic_tests::media;
use mosaic_tests::{S3Server, World, WorldOptions, eventually};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_lives_in_s3_from_upload_to_deletion() {
    let s3 = S3Server::start("mosaic-media").await.unwrap();
    let w = World::start_with(WorldOptions { storage: Some(s3.storage()), ..Default::default() }).await;
    let u = w.client.signup("s3").await;
    let m = w.client.upload_ready(&u.access_token, "image/jpeg", media::jpeg_with_exif(1500, 1000, 1, true)).await;
    assert_eq!(m["status"], "ready", "{m}");
    let id = m["id"].as_str().unwrap();
    let keys = s3.keys("").await;
    assert_eq!(keys.iter().filter(|k| k.starts_with("blobs/")).count(), 1, "{keys:?}");
    for name in ["thumb", "medium", "large"] {
        assert!(keys.contains(&format!("media/{id}/{name}.webp")), "{name} missing from {keys:?}");
    }
    assert!(!keys.iter().any(|k| k.starts_with("staging/")), "staging cleaned up: {keys:?}");

    let (status, headers, bytes) = w.client.fetch(&format!("/v1/media/{id}/medium"), &[("range", "bytes=0-11")]).await;
    assert_eq!(status, 206);
    assert_eq!(&bytes[..4], b"RIFF");
    assert!(headers.contains_key("etag"));

    let post =
        w.client.post("/v1/posts", Some(&u.access_token), json!({"caption": "from s3", "media_ids": [id]})).await;
    post.assert_status(201);
    w.client
        .delete(&format!("/v1/posts/{}", post.body["id"].as_str().unwrap()), &u.access_token)
        .await
        .assert_status(204);
    // What stays is the analytics warehouse (its Parquet files in the same bucket).
    assert!(
        eventually(Duration::from_secs(10), || async { s3.keys("").await.iter().all(|k| k.starts_with("analytics/")) })
            .await,
        "every object of the deleted post leaves the bucket"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            s3.keys("analytics/events/").await.iter().any(|k| k.ends_with(".parquet"))
        })
        .await,
        "the warehouse writes Parquet to S3 too"
    );
    w.stop().await;
    s3.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_can_redirect_to_presigned_urls() {
    let s3 = S3Server::start("mosaic-presigned").await.unwrap();
    let options = WorldOptions { storage: Some(s3.storage()), ..Default::default() }.set("edge.media_redirect", true);
    let w = World::start_with(options).await;
    let u = w.client.signup("presign").await;
    let m = w.client.upload_ready(&u.access_token, "image/png", media::png_with_alpha(64, 64)).await;
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res =
        no_redirects.get(format!("{}/v1/media/{}/thumb", w.base(), m["id"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(res.status(), 307);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.contains("X-Amz-Signature="), "{location}");
    let bytes = reqwest::get(&location).await.unwrap().error_for_status().unwrap().bytes().await.unwrap();
    assert_eq!(&bytes[..4], b"RIFF");
    w.stop().await;
    s3.stop().await;
}
