//! `infrahaus-operator dashboard` against the real parts: its API with
//! ServiceAccount tokens checked by the test bed's API server, event streams
//! read from Redis, and the status-following mode with the controller.

use crate::support;

use std::time::Duration;

use infrahaus_operator::crd::Phase;
use serde_json::{json, Value};
use support::dashboard::{
    add_log_events, dashboard_connections, idle_container, service_account_token, Dashboard, SseEvent,
};
use support::fixtures::{container, template, READY_TIMEOUT};
use support::World;

const READ: Duration = Duration::from_secs(10);
/// Long enough for an event that is wrongly sent to arrive.
const QUIET: Duration = Duration::from_millis(1500);

fn ids(events: &[SseEvent]) -> Vec<String> {
    events.iter().map(|e| e.id.clone().unwrap_or_default()).collect()
}

fn expected_ids(added: &[(String, String)]) -> Vec<String> {
    added.iter().map(|(id, _)| id.clone()).collect()
}

#[tokio::test]
async fn events_replay_then_follow_and_resume_after_the_last_event_id() {
    let world = World::new("dash-events").await.expect("world");
    let redis = world.redis_url.clone().expect("redis");
    idle_container(&world, "web-1").await.expect("container");
    let dashboard = Dashboard::start(&world, Some(&redis), &["--heartbeat=1s"]).await.expect("dashboard");
    let token = service_account_token(&world, "viewer", true).await.expect("token");

    let before = add_log_events(&world, &redis, "web-1", 0, 5).await.expect("xadd");
    let mut stream = dashboard.events(&world.ns, "web-1", Some(&token), &[]).await.expect("stream");
    let replayed = stream.take(5, READ).await.expect("replay");
    assert_eq!(ids(&replayed), expected_ids(&before), "the replay is the stream, in order");
    let data: Vec<&str> = replayed.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, before.iter().map(|(_, json)| json.as_str()).collect::<Vec<_>>(), "the data is the Redis JSON");
    assert_eq!(stream.retry.as_deref(), Some("1000"), "the browser is told to reconnect after a second");

    let live = add_log_events(&world, &redis, "web-1", 5, 3).await.expect("xadd");
    assert_eq!(ids(&stream.take(3, READ).await.expect("live")), expected_ids(&live), "then it follows live");
    assert_eq!(stream.next(Duration::from_millis(2500)).await.expect("read"), None, "nothing else");
    assert!(stream.comments.iter().any(|c| c == "heartbeat"), "an idle stream has heartbeats: {:?}", stream.comments);
    drop(stream);

    // Events written while the client was away: a reconnect with the last
    // id it saw gets exactly those.
    let missed = add_log_events(&world, &redis, "web-1", 8, 4).await.expect("xadd");
    let last_seen = live.last().expect("live events").0.clone();
    let mut resumed =
        dashboard.events(&world.ns, "web-1", Some(&token), &[("Last-Event-ID", &last_seen)]).await.expect("resume");
    assert_eq!(ids(&resumed.take(4, READ).await.expect("resumed")), expected_ids(&missed), "nothing lost");
    assert_eq!(resumed.next(QUIET).await.expect("read"), None, "nothing repeated");

    // A page that opens a new EventSource itself names the id in the query.
    let from_query = format!("/api/v1/namespaces/{}/containers/web-1/events?lastEventId={}", world.ns, missed[1].0);
    let response = dashboard.get(&from_query, Some(&token), &[]).await.expect("request");
    let mut by_query = support::dashboard::SseReader::new(response);
    assert_eq!(ids(&by_query.take(2, READ).await.expect("by query")), expected_ids(&missed[2..]));

    let bad = dashboard
        .get(
            &format!("/api/v1/namespaces/{}/containers/web-1/events", world.ns),
            Some(&token),
            &[("Last-Event-ID", "x")],
        )
        .await
        .expect("request");
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn streams_opened_while_events_arrive_get_each_event_once() {
    const EVENTS: usize = 300;
    let world = World::new("dash-handover").await.expect("world");
    let redis = world.redis_url.clone().expect("redis");
    idle_container(&world, "web-1").await.expect("container");
    let dashboard = Dashboard::start(&world, Some(&redis), &["--auth=none"]).await.expect("dashboard");

    let writer = {
        let (world_ns, redis) = (world.ns.clone(), redis.clone());
        tokio::spawn(async move {
            let key = infrahaus_operator::progress::events_stream(&world_ns, "web-1");
            let mut connection = redis::Client::open(redis.as_str())
                .expect("url")
                .get_multiplexed_async_connection()
                .await
                .expect("redis");
            for n in 0..EVENTS {
                redis::cmd("XADD")
                    .arg(&key)
                    .arg("*")
                    .arg("event")
                    .arg(format!("{{\"n\":{n}}}"))
                    .exec_async(&mut connection)
                    .await
                    .expect("xadd");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // Streams opened one after another while the writer runs: each hands
    // over from its replay to the live follower at a different point.
    let mut streams = Vec::new();
    for _ in 0..8 {
        streams.push(dashboard.events(&world.ns, "web-1", None, &[]).await.expect("stream"));
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    writer.await.expect("writer");
    let all = support::dashboard::stream_ids(&world, &redis, "web-1").await.expect("XRANGE");
    assert_eq!(all.len(), EVENTS);
    for (index, stream) in streams.iter_mut().enumerate() {
        let got = ids(&stream.take(EVENTS, Duration::from_secs(30)).await.expect("every event"));
        assert_eq!(got, all, "stream {index}: every event once, in order");
        assert_eq!(stream.next(QUIET).await.expect("read"), None, "stream {index}: nothing more");
    }
}

#[tokio::test]
async fn requests_need_a_token_and_access_to_the_namespace() {
    let world = World::new("dash-auth").await.expect("world");
    let redis = world.redis_url.clone().expect("redis");
    idle_container(&world, "web-1").await.expect("container");
    let other = testbed::unique_namespace(&world.client, "dash-auth-other").await.expect("namespace");
    let dashboard = Dashboard::start(&world, Some(&redis), &[]).await.expect("dashboard");
    let viewer = service_account_token(&world, "viewer", true).await.expect("viewer token");
    let nobody = service_account_token(&world, "nobody", false).await.expect("token without RBAC");
    let list = format!("/api/v1/containers?namespace={}", world.ns);
    let events = |name: &str, ns: &str| format!("/api/v1/namespaces/{ns}/containers/{name}/events");

    for path in [list.clone(), events("web-1", &world.ns)] {
        let response = dashboard.get(&path, None, &[]).await.expect("request");
        assert_eq!(response.status(), 401, "{path} without a token");
        assert_eq!(response.headers().get("www-authenticate").map(|v| v.to_str().unwrap_or_default()), Some("Bearer"));
        let response = dashboard.get(&path, Some("not-a-token"), &[]).await.expect("request");
        assert_eq!(response.status(), 401, "{path} with a token the API server rejects");
    }

    for path in [list.clone(), events("web-1", &world.ns), events("absent", &world.ns)] {
        let response = dashboard.get(&path, Some(&nobody), &[]).await.expect("request");
        assert_eq!(response.status(), 403, "{path} for a ServiceAccount without RBAC");
        let body = response.text().await.expect("body");
        assert!(!body.contains("web-1") && !body.contains("absent"), "a 403 tells nothing of the namespace: {body}");
    }

    let response = dashboard.get(&list, Some(&viewer), &[]).await.expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON");
    let names: Vec<&str> = body["items"].as_array().expect("items").iter().filter_map(|i| i["name"].as_str()).collect();
    assert_eq!(names, ["web-1"]);
    assert_eq!(body["items"][0]["phase"], "Pending");
    assert_eq!(body["items"][0]["namespace"], world.ns.as_str());

    let response = dashboard.get(&events("absent", &world.ns), Some(&viewer), &[]).await.expect("request");
    assert_eq!(response.status(), 404, "a Container that does not exist");
    dashboard.events(&world.ns, "web-1", Some(&viewer), &[]).await.expect("the viewer's stream opens");
    // The cookie the page sets works as the header does.
    let cookie = format!("infrahaus_token={viewer}");
    let response = dashboard.get(&list, None, &[("Cookie", &cookie)]).await.expect("request");
    assert_eq!(response.status(), 200);

    for path in
        [format!("/api/v1/containers?namespace={other}"), "/api/v1/containers".to_owned(), events("web-1", &other)]
    {
        let response = dashboard.get(&path, Some(&viewer), &[]).await.expect("request");
        assert_eq!(response.status(), 403, "{path}: the viewer's Role is in {} only", world.ns);
    }

    let log = dashboard.log_text();
    for (who, token) in [("viewer", &viewer), ("nobody", &nobody)] {
        assert!(!log.contains(token.as_str()), "the {who} token is in the dashboard's log");
    }
}

#[tokio::test]
async fn streams_are_limited_per_user_and_in_all() {
    let world = World::new("dash-limits").await.expect("world");
    let redis = world.redis_url.clone().expect("redis");
    idle_container(&world, "web-1").await.expect("container");
    let dashboard = Dashboard::start(&world, Some(&redis), &["--max-streams=3", "--max-streams-per-user=2"])
        .await
        .expect("dashboard");
    let alice = service_account_token(&world, "alice", true).await.expect("token");
    let bob = service_account_token(&world, "bob", true).await.expect("token");
    let carol = service_account_token(&world, "carol", true).await.expect("token");
    let path = format!("/api/v1/namespaces/{}/containers/web-1/events", world.ns);
    let status = |token: String| {
        let path = path.clone();
        let dashboard = &dashboard;
        async move { dashboard.get(&path, Some(&token), &[]).await.expect("request") }
    };

    let a1 = status(alice.clone()).await;
    let _a2 = status(alice.clone()).await;
    assert_eq!(a1.status(), 200);
    let refused = status(alice.clone()).await;
    assert_eq!(refused.status(), 429, "a third stream of one user");
    assert!(refused.text().await.expect("body").contains("2 event streams"));
    let _b1 = status(bob.clone()).await;
    assert_eq!(_b1.status(), 200, "another user still gets one");
    assert_eq!(status(carol.clone()).await.status(), 429, "three streams in all");

    drop(a1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = status(carol.clone()).await;
        if response.status() == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a closed stream never freed its place");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_streams_of_one_container_share_one_redis_connection() {
    let world = World::new("dash-fanout").await.expect("world");
    let redis = testbed::dedicated_redis().await.expect("a Redis of this test's own");
    idle_container(&world, "web-1").await.expect("container");
    idle_container(&world, "web-2").await.expect("container");
    let dashboard = Dashboard::start(&world, Some(&redis.url), &["--auth=none", "--max-streams-per-user=100"])
        .await
        .expect("dashboard");

    let mut streams = Vec::new();
    for _ in 0..30 {
        streams.push(dashboard.events(&world.ns, "web-1", None, &[]).await.expect("stream"));
    }
    streams.push(dashboard.events(&world.ns, "web-2", None, &[]).await.expect("stream"));
    let added = add_log_events(&world, &redis.url, "web-1", 0, 2).await.expect("xadd");
    for stream in &mut streams[..30] {
        assert_eq!(ids(&stream.take(2, READ).await.expect("events")), expected_ids(&added));
    }
    assert_eq!(
        dashboard_connections(&redis.url).await.expect("CLIENT LIST"),
        3,
        "one for replays and one per followed Container"
    );

    drop(streams);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while dashboard_connections(&redis.url).await.expect("CLIENT LIST") != 1 {
        assert!(tokio::time::Instant::now() < deadline, "followers of Containers nobody watches kept their connection");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn without_redis_the_stream_follows_the_status() {
    let mut world = World::new("dash-status").await.expect("world");
    world.start_controller(&[]).expect("controller");
    world.apply(template("web", false)).await.expect("template");
    world.apply(container("web-1", "web", json!({"ipv4": "dhcp"}))).await.expect("container");
    let dashboard = Dashboard::start(&world, None, &["--auth=none", "--heartbeat=1s"]).await.expect("dashboard");

    let mut stream = dashboard.events(&world.ns, "web-1", None, &[]).await.expect("stream");
    let mut seen: Vec<(Option<String>, Value)> = Vec::new();
    while !seen.last().is_some_and(|(_, e)| e["type"] == "complete") {
        let event = stream.next(READY_TIMEOUT).await.expect("read").expect("an event before Ready");
        seen.push((event.id, serde_json::from_str(&event.data).expect("JSON")));
    }
    let steps: Vec<&str> = seen.iter().filter_map(|(_, e)| e["step"].as_str()).collect();
    assert!(steps.contains(&"syncing"), "{steps:?}");
    let (last_id, last) = seen.last().expect("events");
    assert_eq!(last["percent"], 100);
    assert_eq!(last["container"]["name"], "web-1");
    assert!(last["vmid"].is_number(), "{last}");
    let percents: Vec<u64> = seen.iter().filter_map(|(_, e)| e["percent"].as_u64()).collect();
    assert!(percents.windows(2).all(|p| p[0] <= p[1]), "percent never goes back: {percents:?}");
    world.wait_phase("web-1", Phase::Ready, READY_TIMEOUT).await.expect("Ready");

    let last_id = last_id.clone().expect("an id");
    let mut resumed = dashboard.events(&world.ns, "web-1", None, &[("Last-Event-ID", &last_id)]).await.expect("resume");
    assert_eq!(resumed.next(Duration::from_secs(3)).await.expect("read"), None, "the state it saw is not repeated");
    let mut fresh = dashboard.events(&world.ns, "web-1", None, &[]).await.expect("stream");
    let current = fresh.next(READ).await.expect("read").expect("the current state");
    assert_eq!(current.id.as_deref(), Some(last_id.as_str()));
}

#[tokio::test]
async fn auth_none_is_refused_off_loopback() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_infrahaus-operator"))
        .args(["dashboard", "--auth=none", "--listen=0.0.0.0:0"])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .expect("run the dashboard");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("only on a loopback address"), "{stderr}");
}

#[tokio::test]
async fn sigterm_ends_open_streams_and_the_process() {
    let world = World::new("dash-sigterm").await.expect("world");
    let redis = world.redis_url.clone().expect("redis");
    idle_container(&world, "web-1").await.expect("container");
    let mut dashboard = Dashboard::start(&world, Some(&redis), &["--auth=none"]).await.expect("dashboard");
    let mut stream = dashboard.events(&world.ns, "web-1", None, &[]).await.expect("stream");
    assert_eq!(stream.next(Duration::from_millis(500)).await.expect("read"), None, "an empty stream, open");

    let status =
        dashboard.terminate(Duration::from_secs(10)).expect("the dashboard stops at SIGTERM despite the open stream");
    assert!(status.success(), "{status:?}\n{}", dashboard.log_text());
    let ended = stream.next(Duration::from_secs(5)).await;
    assert!(ended.is_err(), "the stream was ended by the server: {ended:?}");
}
