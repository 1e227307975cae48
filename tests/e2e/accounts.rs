use mosaic_tests::World;
use mosaic_tests::client::unique;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signup_returns_tokens_that_open_the_own_profile() {
    let w = World::start().await;
    let name = format!("Ann_{}", unique());
    let reply = w
        .client
        .post(
            "/v1/auth/signup",
            None,
            json!({"username": name, "email": format!("{name}@Example.com"), "password": "correct horse battery", "display_name": "Ann A."}),
        )
        .await;
    reply.assert_status(201);
    assert_eq!(reply.body["user"]["username"], name.to_lowercase(), "usernames are stored lowercase");
    assert_eq!(reply.body["user"]["email"], format!("{}@example.com", name.to_lowercase()));
    assert_eq!(reply.body["user"]["display_name"], "Ann A.");
    assert_eq!(reply.body["token_type"], "Bearer");
    assert_eq!(reply.body["expires_in"], 900);
    let token = reply.body["access_token"].as_str().unwrap();

    let me = w.client.get("/v1/users/me", token).await;
    me.assert_status(200);
    assert_eq!(me.body["id"], reply.body["user"]["id"]);
    assert_eq!(me.body["role"], "user");
    assert_eq!(me.body["preferences"]["topics"], json!([]));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usernames_and_emails_are_unique_regardless_of_case() {
    let w = World::start().await;
    let u = w.client.signup("dup").await;
    let again = w
        .client
        .post("/v1/auth/signup", None, json!({"username": u.username.to_uppercase(), "email": "other@example.com", "password": "correct horse battery"}))
        .await;
    again.assert_problem(409, "username_taken");
    let email = w
        .client
        .post("/v1/auth/signup", None, json!({"username": format!("x{}", unique()), "email": u.email.to_uppercase(), "password": "correct horse battery"}))
        .await;
    email.assert_problem(409, "email_taken");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signups_for_one_name_create_one_account() {
    let w = World::start().await;
    let name = format!("race_{}", unique());
    let attempts = (0..12).map(|i| {
        let client = w.client.clone();
        let name = name.clone();
        async move {
            client
                .post("/v1/auth/signup", None, json!({"username": name, "email": format!("race{i}_{name}@example.com"), "password": "correct horse battery"}))
                .await
        }
    });
    let replies = futures::future::join_all(attempts).await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    assert_eq!(created, 1, "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in replies.iter().filter(|r| r.status != 201) {
        r.assert_problem(409, "username_taken");
    }
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_passwords_and_bad_usernames_are_422() {
    let w = World::start().await;
    for (username, password, code) in [
        ("fine_name", "short", "weak_password"),
        ("fine_name", "aaaaaaaaaaaaaaa", "weak_password"),
        ("fine_name", "fine_name_rocks_123", "weak_password"),
        ("x", "correct horse battery", "validation_failed"),
        ("me", "correct horse battery", "validation_failed"),
        ("bad name!", "correct horse battery", "validation_failed"),
        ("robert'); DROP TABLE user;--", "correct horse battery", "validation_failed"),
    ] {
        let r = w
            .client
            .post(
                "/v1/auth/signup",
                None,
                json!({"username": username, "email": "e@example.com", "password": password}),
            )
            .await;
        r.assert_problem(422, code);
    }
    let r = w
        .client
        .post(
            "/v1/auth/signup",
            None,
            json!({"username": "good_name", "email": "not-an-email", "password": "correct horse battery"}),
        )
        .await;
    r.assert_problem(422, "validation_failed");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_accepts_username_or_email_and_refuses_wrong_passwords() {
    let w = World::start().await;
    let u = w.client.signup("login").await;
    let by_name = w
        .client
        .post("/v1/auth/login", None, json!({"login": u.username.to_uppercase(), "password": u.password}))
        .await;
    by_name.assert_status(200);
    assert_eq!(by_name.body["user"]["id"], u.id);
    let by_email = w.client.post("/v1/auth/login", None, json!({"login": u.email, "password": u.password})).await;
    by_email.assert_status(200);
    let wrong =
        w.client.post("/v1/auth/login", None, json!({"login": u.username, "password": "not the password"})).await;
    wrong.assert_problem(401, "invalid_credentials");
    let nobody =
        w.client.post("/v1/auth/login", None, json!({"login": "nobody_here", "password": "whatever it is"})).await;
    nobody.assert_problem(401, "invalid_credentials");
    let injection =
        w.client.post("/v1/auth/login", None, json!({"login": "' OR 1=1 --", "password": "' OR ''='"})).await;
    injection.assert_problem(401, "invalid_credentials");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_logins_are_throttled_per_account() {
    let w = World::start().await;
    let u = w.client.signup("brute").await;
    for _ in 0..5 {
        w.client
            .post("/v1/auth/login", None, json!({"login": u.username, "password": "guess guess guess"}))
            .await
            .assert_problem(401, "invalid_credentials");
    }
    let blocked =
        w.client.post("/v1/auth/login", None, json!({"login": u.username, "password": "guess guess guess"})).await;
    blocked.assert_problem(429, "rate_limited");
    let retry_after: u64 = blocked.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    // Even the right password waits: the point is to stop guessing.
    let right = w.client.post("/v1/auth/login", None, json!({"login": u.username, "password": u.password})).await;
    right.assert_problem(429, "rate_limited");
    // Other accounts are unaffected.
    let other = w.client.signup("bystander").await;
    w.client.login(&other).await;
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_concurrent_guesses_gets_no_more_tries_than_the_limit() {
    let w = World::start().await;
    let u = w.client.signup("burst").await;
    let guesses = (0..50).map(|i| {
        let client = w.client.clone();
        let login = u.username.clone();
        async move {
            client.post("/v1/auth/login", None, json!({"login": login, "password": format!("guess number {i}")})).await
        }
    });
    let replies = futures::future::join_all(guesses).await;
    let checked = replies.iter().filter(|r| r.status == 401).count();
    let refused = replies.iter().filter(|r| r.status == 429 || r.status == 503).count();
    assert!(checked <= 5, "{checked} of 50 concurrent guesses had their password checked (limit 5)");
    assert_eq!(
        checked + refused,
        50,
        "every guess is either checked or refused: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    // The account's owner is throttled too until the window passes: that is the point.
    let right = w.client.post("/v1/auth/login", None, json!({"login": u.username, "password": u.password})).await;
    assert!(right.status == 429, "{}", right.status);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_fail_closed_when_the_throttle_cannot_count() {
    let w = World::start().await;
    let u = w.client.signup("closed").await;
    let js = async_nats::jetstream::new(w.nats.connect().await);
    js.delete_stream("KV_login_throttle").await.expect("the operator removes the throttle's bucket");
    let r = w.client.post("/v1/auth/login", None, json!({"login": u.username, "password": "guess guess guess"})).await;
    r.assert_problem(503, "unavailable");
    let r = w.client.post("/v1/auth/login", None, json!({"login": u.username, "password": u.password})).await;
    r.assert_problem(503, "unavailable");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_logins_are_throttled_per_ip() {
    let options = mosaic_tests::WorldOptions::default().set("user.login_max_failures_per_ip", 4);
    let w = World::start_with(options).await;
    for i in 0..4 {
        let r = w
            .client
            .post("/v1/auth/login", None, json!({"login": format!("spray{i}"), "password": "guess guess guess"}))
            .await;
        r.assert_problem(401, "invalid_credentials");
    }
    let r = w.client.post("/v1/auth/login", None, json!({"login": "spray9", "password": "guess guess guess"})).await;
    r.assert_problem(429, "rate_limited");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_updates_are_validated_and_persisted() {
    let w = World::start().await;
    let u = w.client.signup("prof").await;
    let path = "/v1/users/me";
    let r = w
        .client
        .send(reqwest::Method::PATCH, path, Some(&u.access_token), Some(json!({"display_name": "  Pro File ", "bio": "line one\nline two", "preferences": {"topics": ["#Travel", "food", "food"]}})))
        .await;
    r.assert_status(200);
    assert_eq!(r.body["display_name"], "Pro File");
    assert_eq!(r.body["bio"], "line one\nline two");
    assert_eq!(r.body["preferences"]["topics"], json!(["travel", "food"]));
    let me = w.client.get(path, &u.access_token).await;
    assert_eq!(me.body["preferences"]["topics"], json!(["travel", "food"]));

    let too_long =
        w.client.send(reqwest::Method::PATCH, path, Some(&u.access_token), Some(json!({"bio": "x".repeat(301)}))).await;
    too_long.assert_problem(422, "validation_failed");
    let bad_topic = w
        .client
        .send(
            reqwest::Method::PATCH,
            path,
            Some(&u.access_token),
            Some(json!({"preferences": {"topics": ["no spaces allowed"]}})),
        )
        .await;
    bad_topic.assert_problem(422, "validation_failed");
    let unknown =
        w.client.send(reqwest::Method::PATCH, path, Some(&u.access_token), Some(json!({"role": "admin"}))).await;
    unknown.assert_problem(422, "validation_failed");
    assert_eq!(w.client.get(path, &u.access_token).await.body["role"], "user");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_profiles_are_found_by_username() {
    let w = World::start().await;
    let a = w.client.signup("pub_a").await;
    let b = w.client.signup("pub_b").await;
    let r = w.client.get(&format!("/v1/users/{}", b.username.to_uppercase()), &a.access_token).await;
    r.assert_status(200);
    assert_eq!(r.body["id"], b.id);
    assert!(r.body.get("email").is_none(), "public profiles hide the email");
    assert_eq!(r.body["viewer"]["following"], false);
    for key in ["id", "username", "display_name", "bio", "followers", "following", "posts"] {
        assert!(r.body.get(key).is_some(), "missing {key}");
    }
    w.client.get("/v1/users/no_such_person", &a.access_token).await.assert_problem(404, "not_found");
    w.client
        .send(reqwest::Method::GET, &format!("/v1/users/{}", b.username), None, None)
        .await
        .assert_problem(401, "unauthorized");
    w.stop().await;
}
