//! The committed NATS configurations: they parse, and the per-service permissions of
//! `nats/accounts.conf` let each component do its job and nothing else.

use mosaic_mesh::component::start_all;
use mosaic_mesh::config::Secret;
use mosaic_mesh::{Mesh, NatsConfig};
use mosaic_tests::{Client, NatsServer, WorldOptions};
use std::path::PathBuf;
use std::time::Duration;

const SECRETS: &[(&str, &str)] = &[
    ("MOSAIC_NATS_USER_PASSWORD", "user-secret"),
    ("MOSAIC_NATS_EDGE_PASSWORD", "edge-secret"),
    ("MOSAIC_NATS_CONTENT_PASSWORD", "content-secret"),
    ("MOSAIC_NATS_INTERACTION_PASSWORD", "interaction-secret"),
    ("MOSAIC_NATS_FEED_PASSWORD", "feed-secret"),
    ("MOSAIC_NATS_MESSAGING_PASSWORD", "messaging-secret"),
    ("MOSAIC_NATS_NOTIFICATION_PASSWORD", "notification-secret"),
    ("MOSAIC_NATS_ANALYTICS_PASSWORD", "analytics-secret"),
    ("MOSAIC_NATS_ADMIN_PASSWORD", "admin-secret"),
    ("MOSAIC_NATS_SYS_PASSWORD", "sys-secret"),
    ("MOSAIC_NATS_LEAF_PASSWORD", "leaf-secret"),
    ("MOSAIC_LEAF_URL", "nats-leaf://leaf:leaf-secret@127.0.0.1:7422"),
    ("MOSAIC_NATS_ROUTE_PASSWORD", "route-secret"),
    ("MOSAIC_NATS_ROUTE_A", "nats-route://route:route-secret@127.0.0.1:6222"),
    ("MOSAIC_NATS_ROUTE_B", "nats-route://route:route-secret@127.0.0.1:6223"),
    ("MOSAIC_NATS_ROUTE_C", "nats-route://route:route-secret@127.0.0.1:6224"),
];

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn the_committed_accounts_are_the_generated_ones() {
    let committed = std::fs::read_to_string(repo("nats/accounts.conf")).unwrap();
    assert!(
        committed == mosaic_mesh::authz::accounts_conf(mosaic::COMPONENTS),
        "nats/accounts.conf is stale: run `cargo run --bin mosaic -- nats config --accounts > nats/accounts.conf`"
    );
}

#[test]
fn the_generated_server_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("server.conf");
    let accounts = mosaic_mesh::authz::accounts_conf(mosaic::COMPONENTS);
    std::fs::write(&conf, mosaic::nats::server_conf("127.0.0.1:4222", dir.path(), Some(8222), &accounts)).unwrap();
    let out = std::process::Command::new("nats-server")
        .arg("-t")
        .arg("-c")
        .arg(&conf)
        .envs(SECRETS.iter().copied())
        .output()
        .expect("nats-server runs");
    assert!(out.status.success(), "`mosaic nats config`: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn every_committed_nats_config_is_valid() {
    for file in [
        "nats/dev.conf",
        "nats/cluster/node-a.conf",
        "nats/cluster/node-b.conf",
        "nats/cluster/node-c.conf",
        "nats/leaf-edge.conf",
    ] {
        let out = std::process::Command::new("nats-server")
            .arg("-t")
            .arg("-c")
            .arg(repo(file))
            .envs(SECRETS.iter().copied())
            .output()
            .expect("nats-server runs");
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn login(user: &str, password: &str, url: &str) -> NatsConfig {
    NatsConfig {
        url: url.to_owned(),
        user: Some(user.into()),
        password: Some(Secret::new(password)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_permissions_allow_the_job_and_nothing_more() {
    mosaic_tests::init_logs();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.conf");
    // Includes resolve relative to the including file, so the accounts are copied next to it.
    std::fs::copy(repo("nats/accounts.conf"), dir.path().join("accounts.conf")).unwrap();
    std::fs::write(&config, "include accounts.conf\n").unwrap();
    let nats = NatsServer::start_with(&["-c", config.to_str().unwrap()], SECRETS).await.unwrap();

    let data = tempfile::tempdir().unwrap();
    let listener = mosaic_edge::bind(([127, 0, 0, 1], 0).into(), 128).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let host = WorldOptions::default().set("public_url", &base).host(data.path()).unwrap().with_listener(listener);
    // Each component on its own connection, with its own credentials.
    let mut running = Vec::new();
    for (name, password) in [
        ("user", "user-secret"),
        ("content", "content-secret"),
        ("messaging", "messaging-secret"),
        ("notification", "notification-secret"),
        ("edge", "edge-secret"),
    ] {
        let mesh = Mesh::connect(&login(name, password, nats.url()), name).await.unwrap();
        let component = mosaic::component(name).unwrap();
        running.push(
            start_all(&host, &mesh, &[component])
                .await
                .unwrap_or_else(|e| panic!("{name} works with its permissions: {e:#}")),
        );
    }

    let client = Client::new(base);
    let u = client.signup("perm").await;
    client.get("/v1/users/me", &u.access_token).await.assert_status(200);

    // Chat end to end: the edge's socket, presence, kept frames, the offline notification.
    let friend = client.signup("friend").await;
    let mut socket = mosaic_tests::socket::connect(client.base(), &friend.access_token).await;
    let conv =
        client.post("/v1/conversations", Some(&u.access_token), serde_json::json!({"member_ids": [friend.id]})).await;
    conv.assert_status(201);
    let path = format!("/v1/conversations/{}/messages", conv.body["id"].as_str().unwrap());
    client.post(&path, Some(&u.access_token), serde_json::json!({"text": "hi"})).await.assert_status(201);
    assert_eq!(mosaic_tests::socket::next_of_type(&mut socket, "chat.message").await["message"]["text"], "hi");
    let inbox = mosaic_tests::eventually(Duration::from_secs(10), || async {
        client.get("/v1/notifications", &u.access_token).await.status.is_success()
    })
    .await;
    assert!(inbox, "the notification service answers through the edge");
    let again = client.login(&u).await;
    client
        .post("/v1/auth/refresh", None, serde_json::json!({"refresh_token": again.refresh_token}))
        .await
        .assert_status(200);

    let refused = nats.permission_violations();
    assert!(refused.is_empty(), "the generated permissions refused the components' own traffic: {refused:#?}");

    // The edge's credentials cannot impersonate a service: its subscription is refused, so
    // nothing it runs can answer service requests.
    let edge_raw = async_nats::connect_with_options(
        nats.url(),
        async_nats::ConnectOptions::with_user_and_password("edge".into(), "edge-secret".into()),
    )
    .await
    .unwrap();
    let _sub = edge_raw.subscribe("mosaic.fake.v1.steal").await.unwrap();
    edge_raw.flush().await.unwrap();
    let admin = async_nats::connect_with_options(
        nats.url(),
        async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin-secret".into()),
    )
    .await
    .unwrap();
    let stolen = tokio::time::timeout(Duration::from_secs(2), admin.request("mosaic.fake.v1.steal", "x".into())).await;
    assert!(!matches!(stolen, Ok(Ok(_))), "the edge user could subscribe to a service subject");

    // Nor read other connections' replies, undo a revocation or purge a bucket, nor call an
    // internal endpoint: the server refuses each (and logs it).
    for (subscribe, subject) in [
        (true, "_INBOX.>"),
        (true, "_INBOX_user.>"),
        (false, "$KV.revocations.some-session"),
        (false, "$JS.API.STREAM.PURGE.KV_revocations"),
        (false, "$JS.API.STREAM.DELETE.KV_revocations"),
        (false, "$JS.API.STREAM.PURGE.EVENTS_USER"),
        (false, "mosaic.user.v1.contact"),
        (false, "mosaic.user.v1.admins"),
    ] {
        if subscribe {
            let _sub = edge_raw.subscribe(subject).await.unwrap();
        } else {
            edge_raw.publish(subject, "x".into()).await.unwrap();
        }
        edge_raw.flush().await.unwrap();
        let kind = if subscribe { "Subscription Violation" } else { "Publish Violation" };
        let refused = mosaic_tests::eventually(Duration::from_secs(10), || async {
            nats.permission_violations()
                .iter()
                .any(|l| l.contains("user:edge") && l.contains(kind) && l.contains(&format!("Subject \"{subject}\"")))
        })
        .await;
        assert!(
            refused,
            "the edge user was not refused: {kind} {subject}; refusals: {:#?}",
            nats.permission_violations()
        );
    }

    for mut r in running.into_iter().rev() {
        r.stop().await;
    }
}

/// A free TCP port on loopback (released again: the server about to start takes it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Reads the monitoring endpoint `path` (e.g. `routez`) of a node.
async fn monitor(port: u16, path: &str) -> serde_json::Value {
    reqwest::get(format!("http://127.0.0.1:{port}/{path}")).await.unwrap().json().await.unwrap()
}

/// A committed node config with this test's ports: routes, monitoring and leaf connections
/// on free ports (the client port and the store directory come from the test server's own
/// flags, which may not repeat the file's).
fn node_conf(dir: &std::path::Path, node: char, route: u16, http: u16, leaf: u16, tls: Option<&str>) -> String {
    let base = [('a', 6222), ('b', 6223), ('c', 6224)].iter().find(|(n, _)| *n == node).unwrap().1;
    let http_base = 8222 + (base - 6222);
    let text = std::fs::read_to_string(repo(&format!("nats/cluster/node-{node}.conf")))
        .unwrap()
        .replace(&format!("listen: 0.0.0.0:{base}"), &format!("listen: 127.0.0.1:{route}"))
        .replace(&format!("http: 127.0.0.1:{http_base}"), &format!("http: 127.0.0.1:{http}"))
        .replace("listen: 0.0.0.0:7422", &format!("listen: 127.0.0.1:{leaf}"))
        .replace(&format!("store_dir: \"/var/lib/nats/mosaic-{node}\""), "")
        .replace("  routes: [", &format!("{}\n  routes: [", tls.unwrap_or_default()));
    let path = dir.join("cluster").join(format!("node-{node}.conf"));
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The three committed node configs running on free ports (with `tls` put in their cluster
/// blocks), once they route to each other: the nodes, their routes' and monitoring ports,
/// and node a's leaf port.
struct Cluster {
    _dir: tempfile::TempDir,
    nodes: Vec<NatsServer>,
    routes: Vec<u16>,
    https: Vec<u16>,
    leaf: u16,
}

impl Cluster {
    async fn start(tls: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("cluster")).unwrap();
        std::fs::copy(repo("nats/accounts.conf"), dir.path().join("accounts.conf")).unwrap();
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let https: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let leaf = free_port();
        let urls: Vec<String> =
            routes.iter().map(|p| format!("nats-route://route:route-secret@127.0.0.1:{p}")).collect();
        let mut env: Vec<(&str, &str)> =
            SECRETS.iter().copied().filter(|(k, _)| !k.starts_with("MOSAIC_NATS_ROUTE_")).collect();
        env.extend([
            ("MOSAIC_NATS_ROUTE_PASSWORD", "route-secret"),
            ("MOSAIC_NATS_ROUTE_A", urls[0].as_str()),
            ("MOSAIC_NATS_ROUTE_B", urls[1].as_str()),
            ("MOSAIC_NATS_ROUTE_C", urls[2].as_str()),
        ]);
        let mut nodes = Vec::new();
        for (i, node) in ['a', 'b', 'c'].into_iter().enumerate() {
            let leaf_port = if i == 0 { leaf } else { free_port() };
            let conf = node_conf(dir.path(), node, routes[i], https[i], leaf_port, tls);
            nodes.push(NatsServer::start_with(&["-c", &conf], &env).await.unwrap());
        }
        let cluster = Self { _dir: dir, nodes, routes, https, leaf };
        // A full mesh: node a routes to b and c.
        let meshed = || async {
            let peers = cluster.peers().await;
            peers.contains(&"mosaic-b".to_owned()) && peers.contains(&"mosaic-c".to_owned())
        };
        assert!(
            mosaic_tests::eventually(Duration::from_secs(20), meshed).await,
            "the nodes did not form a cluster: {:?}",
            monitor(cluster.https[0], "routez").await
        );
        cluster
    }

    /// The servers node a routes to, by name.
    async fn peers(&self) -> Vec<String> {
        let routez = monitor(self.https[0], "routez").await;
        routez["routes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["remote_name"].as_str().map(str::to_owned))
            .collect()
    }

    /// Node a's log.
    fn log(&self) -> String {
        std::fs::read_to_string(self.nodes[0].log_path()).unwrap_or_default()
    }

    /// Starts a server that tries to join through node a at `route_url`, and waits until
    /// node a has turned it away (one more line containing `refusal` in its log); panics if
    /// it joined.
    async fn refuses(&self, route_url: &str, refusal: &str) {
        let before = self.log().matches(refusal).count();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("rogue.conf");
        let block = format!("name: mosaic, listen: 127.0.0.1:{}, routes: [{route_url}]", free_port());
        std::fs::write(&conf, format!("server_name: rogue\ncluster {{ {block} }}\n")).unwrap();
        let _rogue = NatsServer::start_with(&["-c", conf.to_str().unwrap()], &[]).await.unwrap();
        let refused = || async { self.log().matches(refusal).count() > before };
        assert!(mosaic_tests::eventually(Duration::from_secs(20), refused).await, "node a never refused the rogue");
        assert!(!self.peers().await.contains(&"rogue".to_owned()), "the rogue joined the cluster");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_committed_cluster_admits_only_nodes_and_leaves_that_log_in() {
    let cluster = Cluster::start(None).await;
    let (https, leaf) = (&cluster.https, cluster.leaf);
    // A server that knows the address but not the route password is refused.
    cluster.refuses(&format!("nats-route://127.0.0.1:{}", cluster.routes[0]), "Authentication Failure").await;

    // A leaf node must log in as the leaf user: with a wrong password it is refused, with
    // the right one it attaches.
    let log = || cluster.log();
    let refused_before = log().matches("Authentication Failure").count();
    let leaf_conf = repo("nats/leaf-edge.conf");
    let leaf_conf = leaf_conf.to_str().unwrap();
    let wrong = format!("nats-leaf://leaf:wrong@127.0.0.1:{leaf}");
    let wrong_env = [("MOSAIC_LEAF_URL", wrong.as_str()), ("MOSAIC_NATS_EDGE_PASSWORD", "edge-secret")];
    let _intruder = NatsServer::start_with(&["-c", leaf_conf], &wrong_env).await.unwrap();
    assert!(
        mosaic_tests::eventually(Duration::from_secs(20), || async {
            log().matches("Authentication Failure").count() > refused_before
        })
        .await,
        "node a never refused the leaf with a wrong password"
    );
    assert_eq!(monitor(https[0], "leafz").await["leafnodes"].as_u64(), Some(0));
    let right = format!("nats-leaf://leaf:leaf-secret@127.0.0.1:{leaf}");
    let right_env = [("MOSAIC_LEAF_URL", right.as_str()), ("MOSAIC_NATS_EDGE_PASSWORD", "edge-secret")];
    let _region = NatsServer::start_with(&["-c", leaf_conf], &right_env).await.unwrap();
    assert!(
        mosaic_tests::eventually(Duration::from_secs(20), || async {
            monitor(https[0], "leafz").await["leafnodes"].as_u64() == Some(1)
        })
        .await,
        "the leaf with the leaf login did not attach"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_can_require_tls_with_certificates_of_the_clusters_ca() {
    // A CA and one certificate for the nodes (127.0.0.1), made with the openssl CLI.
    let pki = tempfile::tempdir().unwrap();
    let openssl = |args: &[&str]| {
        let out =
            std::process::Command::new("openssl").args(args).current_dir(pki.path()).output().expect("openssl runs");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &["-days", "1", "-subj", "/CN=mosaic test CA", "-keyout", "ca.key", "-out", "ca.crt"],
        ]
        .concat(),
    );
    openssl(&[&["req"], &ec[..], &["-subj", "/CN=nats", "-keyout", "node.key", "-out", "node.csr"]].concat());
    std::fs::write(pki.path().join("ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
        .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext",
        "-out",
        "node.crt",
    ]);
    let file = |name: &str| pki.path().join(name).to_str().unwrap().to_owned();
    let tls = format!(
        "  tls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true, timeout: 2 }}",
        file("node.crt"),
        file("node.key"),
        file("ca.crt")
    );
    // The nodes route to each other over TLS, presenting certificates of their CA.
    let cluster = Cluster::start(Some(&tls)).await;
    // A server with the route password but no TLS is turned away.
    let url = format!("nats-route://route:route-secret@127.0.0.1:{}", cluster.routes[0]);
    cluster.refuses(&url, "TLS Handshake Failure").await;
}
