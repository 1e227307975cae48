//! State survives restarts on the embedded `surrealkv://` engine, and migrations run once.

use mosaic_mesh::db::DbConfig;
use mosaic_tests::{World, WorldOptions};
use serde_json::json;

/// A key-encryption key for the signing keys (base64 of 32 bytes).
const KEK: &str = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";

/// The user service and an edge, the user database on `surrealkv://` under `dir`. The key
/// that seals the signing keys is set: each world has a data directory of its own, where the
/// default key would be made.
fn user_on_surrealkv(dir: &std::path::Path) -> WorldOptions {
    WorldOptions::default()
        .only(&["user", "edge"])
        .set("user.db.url", format!("surrealkv://{}", dir.join("user").display()))
        .set("user.key_encryption_key", KEK)
}

/// Starts a world on files another world just left (the embedded engine releases its lock
/// asynchronously after the last handle is dropped; a new process would not have to wait).
async fn restart(options: &WorldOptions) -> anyhow::Result<World> {
    let mut last = None;
    for _ in 0..100 {
        match World::try_start_with(options.clone()).await {
            Ok(w) => return Ok(w),
            Err(e) if format!("{e:#}").contains("key_encryption_key") => return Err(e),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(last.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_are_sealed_at_rest_and_open_only_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let options = user_on_surrealkv(dir.path());
    let w = World::start_with(options.clone()).await;
    let u = w.client.signup("sealed").await;
    let mut stored = w.db("user").await.query("SELECT VALUE private_pkcs8 FROM signing_key").await.unwrap();
    let stored: Vec<String> = stored.take(0).unwrap();
    assert!(stored.len() >= 2, "this period's key and the next: {stored:?}");
    for key in &stored {
        assert!(key.starts_with("aes256gcm.v1:"), "sealed: {key}");
        // Base64 of an Ed25519 PKCS#8 document starts so.
        assert!(!key.contains("MC4CAQAwBQYDK2Vw"), "no plaintext key: {key}");
    }
    w.stop().await;

    // Another key-encryption key does not open them: the service refuses to start and says why.
    let wrong = options.clone().set("user.key_encryption_key", "BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ=");
    let refused = restart(&wrong).await.err().expect("the service refuses keys it cannot open");
    assert!(format!("{refused:#}").contains("user.key_encryption_key"), "{refused:#}");

    // The right one does, and the tokens it signed still verify.
    let w = restart(&options).await.unwrap();
    w.client.get("/v1/users/me", &u.access_token).await.assert_status(200);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_survive_a_restart_on_surrealkv() {
    let dir = tempfile::tempdir().unwrap();
    let options = user_on_surrealkv(dir.path());
    let w = World::start_with(options.clone()).await;
    let u = w.client.signup("durable").await;
    w.stop().await;

    // A second start applies no migration twice and finds the account, its password and
    // its refresh token.
    let w = restart(&options).await.expect("the world starts again on the same files");
    w.client.login(&u).await;
    w.client.post("/v1/auth/refresh", None, json!({"refresh_token": u.refresh_token})).await.assert_status(200);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_apply_each_file_once() {
    let db = mosaic_mesh::db::connect(&DbConfig { url: "mem://".into(), ..Default::default() }, "user").await.unwrap();
    let runs = (0..4).map(|_| {
        let db = db.clone();
        async move { mosaic_mesh::db::migrate(&db, mosaic_user::MIGRATIONS).await }
    });
    for r in futures::future::join_all(runs).await {
        r.unwrap();
    }
    let mut res = db.query("SELECT VALUE record::id(id) FROM _migration ORDER BY id").await.unwrap();
    let applied: Vec<String> = res.take(0).unwrap();
    assert_eq!(
        applied,
        vec![
            "mesh/0001_outbox".to_owned(),
            "user/0001_init".to_owned(),
            "user/0002_post_counts".to_owned(),
            "user/0003_mutes_muted".to_owned()
        ]
    );

    // A migration edited after it was applied stops the start.
    let edited = [mosaic_mesh::db::Migration { name: "user/0001_init", sql: "DEFINE TABLE sneaky;" }];
    let err = mosaic_mesh::db::migrate(&db, &edited).await.unwrap_err().to_string();
    assert!(err.contains("changed after it was applied"), "{err}");
}

/// Newest-first reads run as reverse range scans; on `surrealkv://` they go through the
/// patched memtable iterator (vendor/README.md), so check they see exactly their range with
/// keys on both sides of it, at its ends and with nothing in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_range_scans_on_surrealkv_see_exactly_their_range() {
    let dir = tempfile::tempdir().unwrap();
    let config = DbConfig { url: format!("surrealkv://{}", dir.path().join("scan").display()), ..Default::default() };
    let db = mosaic_mesh::db::connect(&config, "scan").await.unwrap();
    db.query("DEFINE TABLE item SCHEMALESS; DEFINE INDEX item_owner_at ON item FIELDS owner, at;").await.unwrap();
    let rows: Vec<serde_json::Value> =
        ["a", "m", "z"].iter().flat_map(|o| (0..300).map(move |i| json!({"owner": o, "at": i}))).collect();
    db.query("INSERT INTO item $rows RETURN NONE").bind(("rows", rows)).await.unwrap().check().unwrap();

    let newest = async |owner: &str, before: i64, limit: i64| -> Vec<i64> {
        let mut r = db
            .query("SELECT VALUE at FROM item WHERE owner = $owner AND at < $before ORDER BY at DESC LIMIT $limit")
            .bind(("owner", owner.to_owned()))
            .bind(("before", before))
            .bind(("limit", limit))
            .await
            .unwrap();
        r.take(0).unwrap()
    };
    assert_eq!(newest("m", 1000, 3).await, vec![299, 298, 297]);
    assert_eq!(newest("m", 150, 3).await, vec![149, 148, 147]);
    assert_eq!(newest("m", 2, 5).await, vec![1, 0]);
    assert_eq!(newest("m", 0, 5).await, Vec::<i64>::new());
    assert_eq!(newest("a", 1000, 2).await, vec![299, 298]);
    assert_eq!(newest("z", 1000, 2).await, vec![299, 298]);
    assert_eq!(newest("n", 1000, 2).await, Vec::<i64>::new());
    assert_eq!(newest("m", 1000, 1000).await.len(), 300);
}
