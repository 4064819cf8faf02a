//! `watch` replays a Container's Redis event stream: whatever the stream
//! holds (anyone who can write to Redis can add entries), the replay shows
//! plain lines without control characters, bars no fuller than 100%, and reads
//! on after the stream's last entry.
//!
//! Input starting with `*` is an `XRANGE` answer in the Redis protocol;
//! any other input is entries, one per line: an id, a space, the event JSON.
#![no_main]

use infrahaus_operator::fuzzing::watch_replay;
use libfuzzer_sys::fuzz_target;
use redis::Value;

fuzz_target!(|data: &[u8]| {
    let reply = if data.first() == Some(&b'*') {
        match redis::parse_redis_value(data) {
            Ok(value) => value,
            Err(_) => return,
        }
    } else {
        entries(data)
    };
    let Some(replay) = watch_replay(reply) else { return };
    assert_eq!(replay.last_id, replay.ids.last().map_or("0-0", String::as_str));
    for line in &replay.lines {
        assert!(line.chars().all(|c| !c.is_control() || c == '\n' || c == '\t'), "{line:?}");
    }
    for bar in &replay.bars {
        assert!(bar.chars().all(|c| !c.is_control() || c == '\t'), "{bar:?}");
        let filled = bar.chars().skip(1).take_while(|c| *c == '#').count();
        assert!(filled <= 30, "{bar:?}");
    }
    if let Some(code) = replay.exit_code {
        assert!(code == 0 || code == 1, "{code}");
        assert!(!replay.lines.is_empty());
    }
});

/// An `XRANGE` answer holding one entry per input line.
fn entries(data: &[u8]) -> Value {
    let bulk = |bytes: &[u8]| Value::BulkString(bytes.to_vec());
    Value::Array(
        data.split(|b| *b == b'\n')
            .map(|line| {
                let (id, event) = match line.iter().position(|b| *b == b' ') {
                    Some(at) => (&line[..at], &line[at + 1..]),
                    None => (line, &b""[..]),
                };
                Value::Array(vec![bulk(id), Value::Array(vec![bulk(b"event"), bulk(event)])])
            })
            .collect(),
    )
}
