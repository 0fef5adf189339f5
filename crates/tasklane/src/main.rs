//! The `tasklane` command: `serve` runs the server; the other commands are clients of
//! its APIs (`queues` and `tasks` mirror `gcloud tasks`).

mod access;
mod bench;
mod client;
mod cluster;
mod jobs;
mod output;
mod queues;
mod serve;
mod tasks;
mod work;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tasklane", version, about = "A durable task queue server that speaks the Cloud Tasks API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server on the embedded store.
    Serve(serve::ServeArgs),
    /// Manage queues (like `gcloud tasks queues`).
    #[command(subcommand)]
    Queues(queues::QueuesCommand),
    /// Manage tasks (like `gcloud tasks`).
    #[command(subcommand)]
    Tasks(tasks::TasksCommand),
    /// Create, follow and cancel jobs.
    #[command(subcommand)]
    Jobs(jobs::JobsCommand),
    /// Inspect, redrive and purge the tasks that gave up.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(jobs::DeadLettersCommand),
    /// Run a command for each task of a pull queue: `tasklane work --queue Q -- COMMAND [ARGS…]`.
    Work(work::WorkArgs),
    /// Measure throughput, latency and rate accuracy on this machine.
    Bench(bench::BenchArgs),
    /// Make, list and revoke API tokens.
    #[command(subcommand)]
    Tokens(access::TokensCommand),
    /// Choose where pushes and callbacks may go, beside --egress-allow and --egress-deny.
    #[command(subcommand)]
    Egress(access::EgressCommand),
    /// Rotate the keys tasklane signs tokens with.
    #[command(subcommand)]
    Keys(access::KeysCommand),
    /// Choose which service accounts and audiences tasks may ask tokens for.
    #[command(subcommand)]
    Identities(access::IdentitiesCommand),
    /// Inspect a cluster of tasklane nodes.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Run one command for `tasklane work` and kill its process group when the worker dies.
    #[command(hide = true)]
    Supervise(work::SuperviseArgs),
}

// glibc's allocator spent ~15% of the push drain's CPU (malloc, free, chunk
// consolidation across the runtime's and the store's threads); mimalloc cut it (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // A supervisor runs one command and nothing else: it starts no runtime of threads.
    let command = match Cli::parse().command {
        Command::Supervise(args) => return work::supervise(args),
        command => command,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match command {
            Command::Serve(args) => serve::run(args).await,
            Command::Queues(cmd) => queues::run(cmd).await,
            Command::Tasks(cmd) => tasks::run(cmd).await,
            Command::Cluster(cmd) => cluster::run(cmd).await,
            Command::Jobs(cmd) => jobs::run(cmd).await,
            Command::Work(args) => work::run(args).await,
            Command::DeadLetters(cmd) => jobs::run_dead_letters(cmd).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Tokens(cmd) => access::run_tokens(cmd).await,
            Command::Keys(cmd) => access::run_keys(cmd).await,
            Command::Egress(cmd) => access::run_egress(cmd).await,
            Command::Identities(cmd) => access::run_identities(cmd).await,
            Command::Supervise(_) => unreachable!("handled before the runtime starts"),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ERROR: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
