//! The Redis progress publisher against a real Redis server.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use infrahaus_operator::metrics::Metrics;
use infrahaus_operator::progress::{
    events_stream, progress_channel, ContainerRef, LogStream, ProgressEvent, ProgressSink, PublisherSettings,
    RedisPublisher, EVENTS_STREAM_FIELD,
};
use redis::streams::StreamRangeReply;
use serde_json::{json, Value};

fn pipeline_events(container: &ContainerRef) -> Vec<ProgressEvent> {
    vec![
        ProgressEvent::step(container, "creating", 5, "Creating LXC container..."),
        ProgressEvent::step(container, "creating", 20, "Container created").with_vmid(Some(120)),
        ProgressEvent::step(container, "syncing", 65, "Running setup scripts...").with_vmid(Some(120)),
        ProgressEvent::log(container, "syncing", 65, LogStream::Stdout, "10-setup.sh", "hello").with_vmid(Some(120)),
        ProgressEvent::log(container, "syncing", 65, LogStream::Stderr, "10-setup.sh", "warn: x").with_vmid(Some(120)),
        ProgressEvent::complete(container, "Container ready").with_vmid(Some(120)),
    ]
}

async fn stream_events(url: &str, key: &str) -> Result<Vec<Value>> {
    let mut connection = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let reply: StreamRangeReply = redis::cmd("XRANGE").arg(key).arg("-").arg("+").query_async(&mut connection).await?;
    reply
        .ids
        .iter()
        .map(|entry| {
            let json: String = entry.get(EVENTS_STREAM_FIELD).context("stream entry without an event field")?;
            Ok(serde_json::from_str(&json)?)
        })
        .collect()
}

#[tokio::test]
async fn a_subscriber_and_the_replay_stream_see_the_same_events_in_order() -> Result<()> {
    let redis = testbed::redis().await?;
    let container = ContainerRef::new("progress-order", "web-1", "0b6a4f0e-1");
    let mut subscriber = redis::Client::open(redis.url.as_str())?.get_async_pubsub().await?;
    subscriber.subscribe(progress_channel(&container.namespace, &container.name)).await?;

    let metrics = Metrics::new();
    let publisher = RedisPublisher::new(&redis.url, None, metrics.clone(), PublisherSettings::default())?;
    let events = pipeline_events(&container);
    for event in &events {
        publisher.publish(event).await;
    }

    let expected: Vec<Value> = events.iter().map(serde_json::to_value).collect::<Result<_, _>>()?;
    let received: Vec<Value> = tokio::time::timeout(
        Duration::from_secs(10),
        subscriber
            .on_message()
            .take(events.len())
            .map(|message| serde_json::from_slice(message.get_payload_bytes()))
            .collect::<Vec<_>>(),
    )
    .await
    .context("the subscriber did not receive every event")?
    .into_iter()
    .collect::<Result<_, _>>()?;
    assert_eq!(received, expected);

    let container_json = json!({"namespace": "progress-order", "name": "web-1", "uid": "0b6a4f0e-1"});
    let first = received[0].as_object().context("an object")?;
    let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["container", "message", "percent", "step", "timestamp", "type"]);
    assert_eq!(first["container"], container_json);
    let timestamp = first["timestamp"].as_str().context("a string timestamp")?;
    assert_eq!(timestamp.len(), "2026-11-22T10:00:00.000Z".len(), "{timestamp}");
    assert!(timestamp.ends_with('Z'), "{timestamp}");
    assert_eq!(received[3]["stream"], "stdout");
    assert_eq!(received[3]["script"], "10-setup.sh");
    assert_eq!(received[3]["message"], "hello");
    assert_eq!(received[5]["type"], "complete");
    assert_eq!(received[5]["percent"], 100);

    let replayed = stream_events(&redis.url, &events_stream(&container.namespace, &container.name)).await?;
    assert_eq!(replayed, expected);
    assert_eq!(metrics.redis_publish_failures(), 0);
    Ok(())
}

#[tokio::test]
async fn the_replay_stream_is_capped_near_a_thousand_entries() -> Result<()> {
    let redis = testbed::redis().await?;
    let container = ContainerRef::new("progress-cap", "chatty", "uid");
    let publisher = RedisPublisher::new(&redis.url, None, Metrics::new(), PublisherSettings::default())?;
    for line in 0..1500 {
        let event = ProgressEvent::log(&container, "syncing", 70, LogStream::Stdout, "loop.sh", line.to_string());
        publisher.publish(&event).await;
    }
    let mut connection = redis::Client::open(redis.url.as_str())?.get_multiplexed_async_connection().await?;
    let length: usize = redis::cmd("XLEN")
        .arg(events_stream(&container.namespace, &container.name))
        .query_async(&mut connection)
        .await?;
    // MAXLEN ~ trims whole radix-tree nodes (100 entries by default), so
    // the length lands at or a little above the cap.
    assert!((1000..1500).contains(&length), "stream length {length}");
    Ok(())
}

#[tokio::test]
async fn a_stopped_redis_neither_fails_nor_slows_publishing() -> Result<()> {
    let redis = testbed::dedicated_redis().await?;
    let container = ContainerRef::new("progress-outage", "web-1", "uid");
    let metrics = Metrics::new();
    let publisher = RedisPublisher::new(&redis.url, None, metrics.clone(), PublisherSettings::default())?;
    publisher.publish(&ProgressEvent::step(&container, "creating", 5, "before the outage")).await;
    assert_eq!(metrics.redis_publish_failures(), 0);

    redis.stop();
    let started = Instant::now();
    for percent in 0..100u8 {
        publisher.publish(&ProgressEvent::step(&container, "syncing", percent, "during the outage")).await;
    }
    let elapsed = started.elapsed();
    println!("100 publishes with Redis stopped took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert_eq!(metrics.redis_publish_failures(), 100);
    assert!(metrics.encode().contains("infrahaus_redis_publish_failures_total 100"));
    Ok(())
}

#[tokio::test]
async fn a_hung_redis_costs_one_timeout_then_nothing() -> Result<()> {
    let redis = testbed::dedicated_redis().await?;
    let container = ContainerRef::new("progress-hung", "web-1", "uid");
    let metrics = Metrics::new();
    let publisher = RedisPublisher::new(&redis.url, None, metrics.clone(), PublisherSettings::default())?;
    publisher.publish(&ProgressEvent::step(&container, "creating", 5, "connected")).await;

    // A stopped (not dead) server accepts nothing and answers nothing: the
    // case a plain connection error does not cover.
    let pid = redis.process.pid().to_string();
    let paused = std::process::Command::new("kill").args(["-STOP", &pid]).status()?;
    anyhow::ensure!(paused.success(), "could not pause redis-server");
    let started = Instant::now();
    for percent in 0..100u8 {
        publisher.publish(&ProgressEvent::step(&container, "syncing", percent, "hung")).await;
    }
    let elapsed = started.elapsed();
    std::process::Command::new("kill").args(["-CONT", &pid]).status()?;
    println!("100 publishes with Redis hung took {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert_eq!(metrics.redis_publish_failures(), 100);
    redis.stop();
    Ok(())
}

#[tokio::test]
async fn publishing_resumes_on_a_new_connection_after_the_backoff() -> Result<()> {
    let redis = testbed::dedicated_redis().await?;
    let container = ContainerRef::new("progress-resume", "web-1", "uid");
    let metrics = Metrics::new();
    let settings = PublisherSettings {
        min_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_millis(400),
        ..PublisherSettings::default()
    };
    let publisher = RedisPublisher::new(&redis.url, None, metrics.clone(), settings)?;
    publisher.publish(&ProgressEvent::step(&container, "creating", 5, "first")).await;

    // Dropping the publisher's connection from the server side is what a
    // Redis restart or a failover does to it.
    let mut admin = redis::Client::open(redis.url.as_str())?.get_multiplexed_async_connection().await?;
    let killed: i64 =
        redis::cmd("CLIENT").arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"]).query_async(&mut admin).await?;
    assert_eq!(killed, 1);

    publisher.publish(&ProgressEvent::step(&container, "creating", 10, "lost")).await;
    assert_eq!(metrics.redis_publish_failures(), 1);
    tokio::time::sleep(settings.min_backoff).await;
    publisher.publish(&ProgressEvent::step(&container, "creating", 20, "after the backoff")).await;
    assert_eq!(metrics.redis_publish_failures(), 1);

    let messages: Vec<String> = stream_events(&redis.url, &events_stream(&container.namespace, &container.name))
        .await?
        .iter()
        .filter_map(|event| event["message"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(messages, ["first", "after the backoff"]);
    redis.stop();
    Ok(())
}
