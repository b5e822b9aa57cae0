//! The event stream over real HTTP: the cursor feed pages through the chain, and an SSE
//! client that disconnects and resumes with Last-Event-ID misses nothing and sees
//! nothing twice, including events committed while it was away.

mod process;

use process::start;
use serde_json::Value;

/// One SSE frame: (id, event, data).
type Frame = (u64, String, String);

/// Reads frames from an open SSE response until `want` have arrived.
async fn read_frames(response: &mut reqwest::Response, want: usize) -> Vec<Frame> {
    let mut buffer = String::new();
    let mut frames = Vec::new();
    while frames.len() < want {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(20), response.chunk())
            .await
            .expect("an event within 20 s")
            .expect("read")
            .expect("stream open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let (mut id, mut event, mut data) = (None, String::new(), String::new());
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse().ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if let Some(id) = id {
                frames.push((id, event, data));
            }
        }
    }
    frames
}

async fn add_users(client: &reqwest::Client, base: &str, key: &str, names: std::ops::Range<u32>) {
    for n in names {
        let response = client
            .post(format!("{base}/v1/users"))
            .bearer_auth(key)
            .json(&serde_json::json!({ "name": format!("user {n}") }))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 201);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_pages_and_sse_resumes_without_gaps_or_repeats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("path");
    let invite = process::create_tenant(data, "acme");
    let server = start(&["--data-dir", data]).await;
    let base = server.base.clone();
    let client = reqwest::Client::new();
    let redeemed = process::redeem(&client, &base, &invite).await;
    let key = redeemed["api_key"].as_str().expect("key").to_owned();
    add_users(&client, &base, &key, 0..8).await;

    // The feed, two events per page, from the start to the head.
    let mut after = 0;
    let mut fed: Vec<Value> = Vec::new();
    loop {
        let page: Value = client
            .get(format!("{base}/v1/events?after={after}&limit=2"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("feed")
            .json()
            .await
            .expect("json");
        let events = page["events"].as_array().expect("events").clone();
        if events.is_empty() {
            assert_eq!(page["head"].as_u64(), Some(after));
            break;
        }
        after = page["next"].as_u64().expect("next");
        fed.extend(events);
    }
    let seqs: Vec<u64> = fed
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, (1..=after).collect::<Vec<_>>());
    let head = after;

    // SSE from the start: read half, hang up.
    let mut first = client
        .get(format!("{base}/v1/events/stream"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("sse");
    assert_eq!(first.status(), 200);
    let half = usize::try_from(head / 2).expect("small");
    let mut seen = read_frames(&mut first, half).await;
    seen.truncate(half);
    drop(first);
    // Events committed while the client is away.
    add_users(&client, &base, &key, 8..12).await;
    let last = seen.last().map(|f| f.0).expect("frames");
    let mut second = client
        .get(format!("{base}/v1/events/stream"))
        .bearer_auth(&key)
        .header("Last-Event-ID", last.to_string())
        .send()
        .await
        .expect("sse");
    let rest = usize::try_from(head + 4 - last).expect("small");
    let resumed = read_frames(&mut second, rest).await;
    // And one committed while connected arrives live.
    add_users(&client, &base, &key, 12..13).await;
    let live = read_frames(&mut second, 1).await;
    seen.extend(resumed);
    seen.extend(live);
    let ids: Vec<u64> = seen.iter().map(|f| f.0).collect();
    assert_eq!(
        ids,
        (1..=head + 5).collect::<Vec<_>>(),
        "every event once, in order"
    );
    // The data is the event as the feed and the export carry it.
    for (frame, event) in seen.iter().zip(&fed) {
        let data: Value = serde_json::from_str(&frame.2).expect("json data");
        assert_eq!(&data, event);
        assert_eq!(frame.1, event["kind"].as_str().expect("kind"));
    }
    // Another tenant's key never sees acme's stream: no key, no stream.
    let anonymous = client
        .get(format!("{base}/v1/events/stream"))
        .send()
        .await
        .expect("sse");
    assert_eq!(anonymous.status(), 401);
}
