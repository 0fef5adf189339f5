//! apalis with its PostgreSQL storage: enqueue N no-op jobs, then time one worker at the
//! given concurrency draining them. Prints one JSON line like the Node peers.
//! Usage: apalis-peer <jobs>   (BENCH_DATABASE_URL, default the local test database)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use apalis::layers::WorkerBuilderExt;
use apalis::prelude::*;
use apalis_sql::Config;
use apalis_sql::postgres::{PgPool, PostgresStorage};
use serde::{Deserialize, Serialize};

const NAMESPACE: &str = "tasklane_bench::Noop";
const CONCURRENCY: usize = 100;
const BUFFER_SIZE: usize = 100;
const POLL_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Debug, Serialize, Deserialize)]
struct Noop {
    i: usize,
}

/// Handler calls by job number; a drain only counts when each job ran once.
struct Tally {
    seen: Vec<AtomicUsize>,
    count: AtomicUsize,
    repeats: AtomicUsize,
    done: tokio::sync::Notify,
}

async fn noop(job: Noop, tally: Data<Arc<Tally>>) -> Result<(), Error> {
    if tally.seen[job.i].fetch_add(1, Ordering::Relaxed) > 0 {
        tally.repeats.fetch_add(1, Ordering::Relaxed);
    } else if tally.count.fetch_add(1, Ordering::Relaxed) + 1 == tally.seen.len() {
        tally.done.notify_one();
    }
    Ok(())
}

fn cpu_and_peak() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak_kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    ((ticks(11) + ticks(12)) / 100.0, peak_kb / 1024.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let jobs: usize = std::env::args().nth(1).as_deref().unwrap_or("100000").parse()?;
    let url = std::env::var("BENCH_DATABASE_URL").unwrap_or("postgres://postgres@127.0.0.1:5432/test".into());
    let pool = PgPool::connect(&url).await?;
    PostgresStorage::setup(&pool).await?;
    sqlx_clear(&pool).await?;

    // Enqueue with apalis's own SQL function, in one statement per 10,000 jobs.
    let started = Instant::now();
    for from in (0..jobs).step_by(10_000) {
        let to = (from + 10_000).min(jobs) as i64;
        apalis_sql::sqlx::query(
            "SELECT apalis.push_job($1, json_build_object('i', i)) FROM generate_series($2::bigint, $3::bigint - 1) i",
        )
        .bind(NAMESPACE)
        .bind(from as i64)
        .bind(to)
        .execute(&pool)
        .await?;
    }
    let enqueue_seconds = started.elapsed().as_secs_f64();

    let tally = Arc::new(Tally {
        seen: (0..jobs).map(|_| AtomicUsize::new(0)).collect(),
        count: AtomicUsize::new(0),
        repeats: AtomicUsize::new(0),
        done: tokio::sync::Notify::new(),
    });
    let config = Config::new(NAMESPACE).set_buffer_size(BUFFER_SIZE).set_poll_interval(POLL_INTERVAL);
    let storage: PostgresStorage<Noop> = PostgresStorage::new_with_config(pool.clone(), config);
    let worker = WorkerBuilder::new("bench")
        .concurrency(CONCURRENCY)
        .data(tally.clone())
        .backend(storage)
        .build_fn(noop);
    let start = Instant::now();
    let waiting = tally.clone();
    Monitor::new()
        .register(worker)
        .run_with_signal(async move {
            waiting.done.notified().await;
            Ok(())
        })
        .await?;
    let drain_seconds = start.elapsed().as_secs_f64();
    let (count, repeats) = (tally.count.load(Ordering::Relaxed), tally.repeats.load(Ordering::Relaxed));
    if count != jobs || repeats != 0 {
        eprintln!("apalis: {count} of {jobs} jobs ran, {repeats} ran again");
        std::process::exit(1);
    }
    sqlx_clear(&pool).await?;
    let (cpu, peak) = cpu_and_peak();
    println!(
        "{}",
        serde_json::json!({
            "system": "apalis",
            "version": "0.7.4 (apalis-sql 0.7.4)",
            "settings": {"concurrency": CONCURRENCY, "buffer_size": BUFFER_SIZE, "poll_interval_ms": POLL_INTERVAL.as_millis() as u64},
            "jobs": jobs,
            "enqueue_per_s": jobs as f64 / enqueue_seconds,
            "drain_seconds": drain_seconds,
            "drain_per_s": jobs as f64 / drain_seconds,
            "cpu_seconds": cpu,
            "peak_rss_mb": peak,
        })
    );
    Ok(())
}

/// Remove this bench's jobs, before and after a run.
async fn sqlx_clear(pool: &PgPool) -> Result<(), apalis_sql::sqlx::Error> {
    apalis_sql::sqlx::query("DELETE FROM apalis.jobs WHERE job_type = $1").bind(NAMESPACE).execute(pool).await.map(drop)
}
