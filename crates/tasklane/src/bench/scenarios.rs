//! The scenarios `tasklane bench` runs, each bounded in count and time, each checking what
//! it measures (every task delivered once, rates within their tolerance).

use super::*;

/// Push: tasks created into paused queues, then every queue resumed; measures the drain.
/// `settle` gives a cluster node time to take the new queues before the clock starts.
pub(super) async fn push(
    b: &Bench,
    server: &ServerProcess,
    label: &str,
    prefix: &str,
    n: usize,
    queues: usize,
    settle: Duration,
) -> anyhow::Result<Vec<Row>> {
    for q in 0..queues {
        b.queue(&format!("{prefix}-q{q}"), 500.0, true).await?;
    }
    tokio::time::sleep(settle).await;
    let ids: Vec<(String, String)> =
        (0..n).map(|i| (format!("{prefix}-{i}"), format!("{prefix}-q{}", i % queues))).collect();
    let names: Vec<String> = ids.iter().map(|(t, _)| t.clone()).collect();
    let base = b.distinct();
    let mark = server.mark();
    let created_at = Instant::now();
    b.create(ids, 64).await?;
    let create_secs = created_at.elapsed().as_secs_f64();
    let create_usage = server.usage(mark);
    let mark = server.mark();
    let start = Instant::now();
    let own_cpu = cpu_seconds("self");
    for q in 0..queues {
        b.post(&format!("{LOCATION}/queues/{prefix}-q{q}:resume"), json!({})).await?;
    }
    // At least 500 a second, however slow the machine: a stall fails in a minute, not ten.
    let deadline = Duration::from_secs(60).max(Duration::from_secs_f64(n as f64 / 500.0));
    let last = b.wait_delivered(&names, base, deadline).await?;
    let secs = last.duration_since(start).as_secs_f64();
    let queue_ids: Vec<String> = (0..queues).map(|q| format!("{prefix}-q{q}")).collect();
    let recorded = b.wait_recorded(&queue_ids, Duration::from_secs(60)).await?;
    let drain_usage = server.usage(mark);
    let sink_cpu = cpu_seconds("self") - own_cpu;
    let latency: Vec<f64> =
        names.iter().filter_map(|id| b.arrival(id).map(|t| t.duration_since(start).as_secs_f64() * 1000.0)).collect();
    Ok(vec![
        Row::rate(
            format!("create, one task per request ({label})"),
            n,
            create_secs,
            Some(create_usage),
            "64 concurrent HTTP clients".into(),
        ),
        Row {
            scenario: format!("HTTP push drain ({label})"),
            tasks: n,
            seconds: secs,
            throughput: n as f64 / secs,
            latency: percentiles(latency),
            server: Some(drain_usage),
            note: format!(
                "{queues} queues at 500/s; latency from resume to arrival; every outcome recorded {} ms after the last \
                 arrival; the sink used {sink_cpu:.1} s CPU",
                recorded.duration_since(last).as_millis()
            ),
        },
    ])
}

/// Idle queue: tasks created one at a time at a steady, low rate; create-acknowledged to arrival.
pub(super) async fn idle_latency(b: &Bench, server: &ServerProcess, n: usize, per_second: f64) -> anyhow::Result<Row> {
    b.queue("idle", 500.0, false).await?;
    let mark = server.mark();
    let mut latencies = Vec::with_capacity(n);
    let gap = Duration::from_secs_f64(1.0 / per_second);
    let started = Instant::now();
    for i in 0..n {
        let id = format!("idle-{i}");
        let sent = Instant::now();
        b.post(
            &format!("{LOCATION}/queues/idle/tasks"),
            json!({"task": {"name": format!("{LOCATION}/queues/idle/tasks/{id}"), "httpRequest": {"url": b.sink_url}}}),
        )
        .await?;
        let arrived = loop {
            if let Some(t) = b.arrival(&id) {
                break t;
            }
            if sent.elapsed() > Duration::from_secs(10) {
                bail!("idle task {id} not delivered within 10 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        latencies.push(arrived.duration_since(sent).as_secs_f64() * 1000.0);
        let next = started + gap * (i as u32 + 1);
        tokio::time::sleep_until(next.into()).await;
    }
    {
        let arrivals = b.sink.arrivals.lock().map_err(|_| anyhow::anyhow!("lock"))?;
        let twice = (0..n).filter(|i| arrivals.get(&format!("idle-{i}")).is_some_and(|t| t.len() > 1)).count();
        anyhow::ensure!(twice == 0, "{twice} idle tasks arrived more than once");
    }
    Ok(Row {
        scenario: "idle queue latency, create to dispatch".into(),
        tasks: n,
        seconds: started.elapsed().as_secs_f64(),
        throughput: n as f64 / started.elapsed().as_secs_f64(),
        latency: percentiles(latencies),
        server: Some(server.usage(mark)),
        note: format!("{per_second}/s, one create at a time; from the create request to arrival"),
    })
}

/// How far a measured rate may be from its limit before the bench fails: the quiet-machine
/// figure is within 0.15% (BENCHMARKS.md); this leaves room for a loaded CI machine and the
/// two-second quick run, while a limiter that ignores bursts or drifts by a tick fails.
pub(super) const RATE_TOLERANCE_PERCENT: f64 = 5.0;

/// Rate accuracy: a queue at `rate`/s drained for `secs` after its initial burst.
pub(super) async fn rate_accuracy(b: &Bench, server: &ServerProcess, rate: f64, secs: u64) -> anyhow::Result<Row> {
    b.queue("rated", rate, true).await?;
    let mark = server.mark();
    let burst = ((rate / 5.0).floor() as usize).max(10);
    let n = burst + (rate as usize) * secs as usize + (rate as usize); // one extra second of work
    let ids: Vec<(String, String)> = (0..n).map(|i| (format!("rated-{i}"), "rated".to_string())).collect();
    b.create(ids, 32).await?;
    let start = Instant::now();
    b.post(&format!("{LOCATION}/queues/rated:resume"), json!({})).await?;
    tokio::time::sleep(Duration::from_secs(secs) + Duration::from_millis(1500)).await;
    let mut times: Vec<Instant> = {
        let arrivals = b.sink.arrivals.lock().map_err(|_| anyhow::anyhow!("lock"))?;
        let twice = arrivals.iter().filter(|(k, t)| k.starts_with("rated-") && t.len() > 1).count();
        anyhow::ensure!(twice == 0, "{twice} rate-limited tasks arrived more than once");
        arrivals.iter().filter(|(k, _)| k.starts_with("rated-")).filter_map(|(_, t)| t.first().copied()).collect()
    };
    times.sort();
    if times.len() <= burst {
        bail!("only {} deliveries at {rate}/s", times.len());
    }
    // Measure from the end of the initial burst, over `secs` seconds.
    let from = times[burst - 1];
    let until = from + Duration::from_secs(secs);
    let count = times.iter().filter(|t| **t > from && **t <= until).count();
    let measured = count as f64 / secs as f64;
    let error = (measured - rate) / rate * 100.0;
    anyhow::ensure!(
        error.abs() <= RATE_TOLERANCE_PERCENT,
        "the queue ran at {measured:.1}/s against a limit of {rate}/s ({error:+.2}%, more than {RATE_TOLERANCE_PERCENT}% off)"
    );
    Ok(Row {
        scenario: format!("rate limit accuracy at {rate}/s"),
        tasks: count,
        seconds: secs as f64,
        throughput: measured,
        latency: None,
        server: Some(server.usage(mark)),
        note: format!(
            "{error:+.2}% off the limit over {secs} s after the burst of {burst}; started {:?} after resume",
            from.duration_since(start)
        ),
    })
}

/// Batched creates, then pull workers: `n` pull tasks created 1,000 per request, then
/// drained by 4 consumers that lease 100 and acknowledge 100 per call. Checks that every
/// task was leased and acknowledged exactly once.
pub(super) async fn pull(b: &Bench, server: &ServerProcess, n: usize) -> anyhow::Result<Vec<Row>> {
    let name = format!("{LOCATION}/queues/pulled");
    b.v1("queues", json!({"name": name, "type": "pull"})).await?;
    let path = name.replace('/', "%2F");
    let mark = server.mark();
    let started = Instant::now();
    let batches: Vec<Vec<serde_json::Value>> = (0..n)
        .map(|i| json!({"name": format!("{name}/tasks/p-{i}"), "payload": format!("{i}")}))
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(<[serde_json::Value]>::to_vec)
        .collect();
    let mut creating = tokio::task::JoinSet::new();
    for batch in batches {
        let b = b.clone();
        let path = path.clone();
        creating.spawn(async move {
            let out = b.v1(&format!("queues/{path}/tasks"), json!({"tasks": batch})).await?;
            let failed = out["failed"].as_array().map_or(0, Vec::len);
            anyhow::ensure!(failed == 0, "{failed} creates failed: {}", out["failed"]);
            anyhow::Ok(())
        });
        // Two requests in flight at a time.
        if creating.len() >= 2 {
            creating.join_next().await.context("a create batch")???;
        }
    }
    while let Some(r) = creating.join_next().await {
        r??;
    }
    let create_secs = started.elapsed().as_secs_f64();
    let create_usage = server.usage(mark);

    let mark = server.mark();
    let drained = Instant::now();
    let own_cpu = cpu_seconds("self");
    let acked = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let mut consumers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let b = b.clone();
        let path = path.clone();
        let acked = acked.clone();
        consumers.spawn(async move {
            loop {
                let leased = b
                    .v1(&format!("queues/{path}/tasks:lease"), json!({"max_tasks": 100, "lease_duration": "600s"}))
                    .await?;
                let tasks = leased["tasks"].as_array().cloned().unwrap_or_default();
                if tasks.is_empty() {
                    return anyhow::Ok(());
                }
                let items: Vec<serde_json::Value> =
                    tasks.iter().map(|t| json!({"name": t["name"], "lease_id": t["lease_id"]})).collect();
                let out = b.v1(&format!("queues/{path}/tasks:acknowledge"), json!({"tasks": items})).await?;
                let refused = out["refused"].as_array().map_or(0, Vec::len);
                anyhow::ensure!(refused == 0, "{refused} acknowledgements were refused");
                let mut acked = acked.lock().map_err(|_| anyhow::anyhow!("lock"))?;
                for t in &tasks {
                    let id = t["id"].as_str().unwrap_or("").to_string();
                    anyhow::ensure!(acked.insert(id.clone()), "task {id} was leased and acknowledged twice");
                }
            }
        });
    }
    while let Some(r) = consumers.join_next().await {
        r??;
    }
    let drain_secs = drained.elapsed().as_secs_f64();
    let drain_usage = server.usage(mark);
    let consumers_cpu = cpu_seconds("self") - own_cpu;
    let done = acked.lock().map_err(|_| anyhow::anyhow!("lock"))?.len();
    if done != n {
        bail!("pull: {done} of {n} tasks were acknowledged");
    }
    Ok(vec![
        Row::rate(
            "create, 1,000 pull tasks per request (embedded)".into(),
            n,
            create_secs,
            Some(create_usage),
            "2 requests in flight".into(),
        ),
        Row::rate(
            "pull: lease 100 + acknowledge 100 per call (embedded)".into(),
            n,
            drain_secs,
            Some(drain_usage),
            format!("4 consumers, which used {consumers_cpu:.1} s CPU; every task acknowledged once"),
        ),
    ])
}

/// The bound under every push figure: the same HTTP client settings as tasklane's
/// dispatcher sending `n` requests straight to the sink, `concurrency` at a time. No
/// tasklane, no store: what this machine's loopback HTTP costs on its own.
pub(super) async fn loopback_bound(b: &Bench, n: usize, concurrency: usize) -> anyhow::Result<Row> {
    let client = tasklane_server::dispatch::http_client().map_err(anyhow::Error::msg)?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, url, next) = (client.clone(), b.sink_url.clone(), next.clone());
        senders.spawn(async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let resp = client.post(&url).send().await?;
                anyhow::ensure!(resp.status().is_success(), "the sink answered {}", resp.status());
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = senders.join_next().await {
        r??;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Row::rate(
        "bound: loopback HTTP round trips, no tasklane".into(),
        n,
        secs,
        None,
        format!("{concurrency} in flight from tasklane's HTTP client settings to the sink"),
    ))
}

/// `n` tasks scheduled an hour ahead, held; then tasklane is killed (`kill -9`) and
/// started again, and the time from starting it to the first dispatch of a task that fell
/// due while it was down is measured.
pub(super) async fn held(b: &mut Bench, dir: &std::path::Path, n: usize) -> anyhow::Result<Vec<Row>> {
    let data = dir.join("held");
    let args = vec!["--data-dir".to_string(), data.display().to_string()];
    let server = ServerProcess::start(&args).await?;
    b.api = format!("http://{}", server.api);
    b.queue("held", 500.0, false).await?;
    b.queue("wake", 500.0, false).await?;
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let later = later.format(&time::format_description::well_known::Rfc3339)?;
    let mark = server.mark();
    let started = Instant::now();
    let batches: Vec<std::ops::Range<usize>> = (0..n).step_by(100).map(|i| i..(i + 100).min(n)).collect();
    let batches = Arc::new(Mutex::new(batches));
    let mut creating = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (b, batches, later) = (b.clone(), batches.clone(), later.clone());
        creating.spawn(async move {
            loop {
                let Some(range) = batches.lock().ok().and_then(|mut v| v.pop()) else { return anyhow::Ok(()) };
                let size = range.len();
                let requests: Vec<serde_json::Value> = range
                    .map(|i| {
                        json!({"parent": format!("{LOCATION}/queues/held"),
                                "task": {"name": format!("{LOCATION}/queues/held/tasks/h-{i}"),
                                "httpRequest": {"url": b.sink_url}, "scheduleTime": later}})
                    })
                    .collect();
                let op = b
                    .post_json(&format!("{LOCATION}/queues/held/tasks:batchCreate"), json!({"requests": requests}))
                    .await?;
                let created = op["response"]["tasks"].as_array().map_or(0, Vec::len);
                anyhow::ensure!(
                    created == size && op["metadata"].get("failedRequests").is_none(),
                    "a batch created {created} of {size}: {}",
                    op["metadata"]
                );
            }
        });
    }
    while let Some(r) = creating.join_next().await {
        r??;
    }
    let create_secs = started.elapsed().as_secs_f64();
    let create_usage = server.usage(mark);
    let rss_held = memory_mb(&server.pid, "VmRSS:");

    // One task falls due while tasklane is down; the clock runs from the restart to its arrival.
    let due = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let due = due.format(&time::format_description::well_known::Rfc3339)?;
    let marker = "wake-1";
    b.post(
        &format!("{LOCATION}/queues/wake/tasks"),
        json!({"task": {"name": format!("{LOCATION}/queues/wake/tasks/{marker}"),
                "httpRequest": {"url": b.sink_url}, "scheduleTime": due}}),
    )
    .await?;
    server.kill().await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    anyhow::ensure!(b.arrival(marker).is_none(), "the marker was delivered before the kill");
    let restarted = Instant::now();
    let server = ServerProcess::start(&args).await?;
    let mark = server.mark();
    b.api = format!("http://{}", server.api);
    let first = loop {
        if let Some(t) = b.arrival(marker) {
            break t;
        }
        anyhow::ensure!(restarted.elapsed() < Duration::from_secs(120), "no dispatch within 120 s of the restart");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let to_first = first.duration_since(restarted).as_secs_f64();
    let after = server.usage(mark);
    let rss_after = memory_mb(&server.pid, "VmRSS:");
    // None of the held tasks may have been dispatched.
    let early =
        b.sink.arrivals.lock().map_err(|_| anyhow::anyhow!("lock"))?.keys().filter(|k| k.starts_with("h-")).count();
    anyhow::ensure!(early == 0, "{early} held tasks were dispatched before their time");
    // And every one of them is still there after the kill.
    let kept = b.count_tasks("held").await?;
    anyhow::ensure!(kept == n, "{kept} of {n} held tasks survived the kill -9");
    server.stop().await?;
    Ok(vec![
        Row::rate(
            format!("create {n} scheduled tasks, 100 per BatchCreateTasks"),
            n,
            create_secs,
            Some(create_usage),
            format!("8 requests in flight; {rss_held:.0} MB resident with all of them held"),
        ),
        Row {
            scenario: format!("restart (kill -9) to first dispatch, {n} held"),
            tasks: 1,
            seconds: to_first,
            throughput: 0.0,
            latency: None,
            server: Some(after),
            note: format!(
                "{:.0} ms from starting the process to the arrival; {rss_after:.0} MB resident then",
                to_first * 1000.0
            ),
        },
    ])
}

/// Idle cost: `n` queues, each holding one task due in an hour, and nothing else to do; the
/// server's CPU over `window`. An idle queue should cost nothing, however many there are.
pub(super) async fn idle_queues(b: &Bench, dir: &std::path::Path, n: usize, window: Duration) -> anyhow::Result<Row> {
    let data = dir.join("queues");
    let server = ServerProcess::start(&["--data-dir".to_string(), data.display().to_string()]).await?;
    let b = Bench { api: format!("http://{}", server.api), ..b.clone() };
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let later = later.format(&time::format_description::well_known::Rfc3339)?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut creating = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (b, next, later) = (b.clone(), next.clone(), later.clone());
        creating.spawn(async move {
            loop {
                let q = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if q >= n {
                    return anyhow::Ok(());
                }
                b.queue(&format!("idle-{q}"), 500.0, false).await?;
                let task = json!({"task": {"name": format!("{LOCATION}/queues/idle-{q}/tasks/later"),
                    "httpRequest": {"url": b.sink_url}, "scheduleTime": later}});
                b.post(&format!("{LOCATION}/queues/idle-{q}/tasks"), task).await?;
            }
        });
    }
    while let Some(r) = creating.join_next().await {
        r??;
    }
    // Let the loops settle after the creates, then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mark = server.mark();
    tokio::time::sleep(window).await;
    let usage = server.usage(mark);
    let rss = memory_mb(&server.pid, "VmRSS:");
    let early = b.sink.arrivals.lock().map_err(|_| anyhow::anyhow!("lock"))?.keys().filter(|k| *k == "later").count();
    anyhow::ensure!(early == 0, "{early} tasks due in an hour were dispatched");
    server.stop().await?;
    Ok(Row {
        scenario: format!("idle cost, {n} queues each holding a task due in 1 h"),
        tasks: n,
        seconds: window.as_secs_f64(),
        throughput: 0.0,
        latency: None,
        server: Some(usage),
        note: format!(
            "{:.2}% of one core while idle; {rss:.0} MB resident",
            usage.cpu_seconds / window.as_secs_f64() * 100.0
        ),
    })
}
