//! `evergreen`: continuous training for online-learning models, in one binary.
//!
//! Subcommands: `run` (watch a data directory, train, gate, publish, optionally serve), `serve`
//! (TensorFlow-Serving-compatible REST over an existing registry), `demo` (the whole loop on the
//! shipped Elec2 stream), `validate` and `config example`, `lineage`.

mod cmd;

/// mimalloc: records, feature vectors and batches are many small allocations freed on other
/// threads than the ones that made them; measured faster than the system allocator on the input
/// pipeline (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Version string: crate version and git commit of the build.
pub const CODE_VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), "+", env!("EVERGREEN_GIT_COMMIT"));

#[derive(Parser, Debug)]
#[command(
    name = "evergreen",
    version = CODE_VERSION,
    about = "Continuous training for online-learning models: ingest spans, fine-tune, gate, publish, serve",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Watch the data directory and run the continuous-training loop (and the server if configured).
    Run(cmd::run::RunArgs),
    /// Serve an existing model registry over TensorFlow Serving's REST API (no training).
    Serve(cmd::serve::ServeArgs),
    /// Offline / backfill training over given files (same window code as `run`), with a
    /// progress bar; publishes one version at the end.
    Train(cmd::train::TrainArgs),
    /// Run the whole loop on the shipped Elec2 stream: no config, no network needed.
    Demo(cmd::demo::DemoArgs),
    /// Check a config file and report the first problem with its key and file.
    Validate(cmd::config::ValidateArgs),
    /// Config helpers.
    Config(cmd::config::ConfigArgs),
    /// Data tools: inspect any supported span file.
    Data(cmd::data::DataArgs),
    /// Benchmarks (input pipeline throughput).
    Bench(cmd::bench::BenchArgs),
    /// Query lineage: which spans, parent, hyperparameters and gate produced a version; which
    /// versions consumed a span.
    Lineage(cmd::lineage::LineageArgs),
    /// The model's versions, labels and traffic policy; promote, rollback, split, pin, shadow;
    /// `show` a version's model (also spelled `evergreen model show`).
    #[command(alias = "model")]
    Models(cmd::models::ModelsArgs),
    /// Where a model stands: versions and split, the last cycles and gate decisions, and, from
    /// the running instance, what it serves, alerts firing and drift.
    Status(cmd::status::StatusArgs),
}

/// Restores the default SIGPIPE disposition (Rust's runtime ignores it).
#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: `signal` with a valid signal number and `SIG_DFL` has no memory-safety
    // preconditions; it runs before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Run(_) | Command::Serve(_) | Command::Demo(_)
    ) {
        // Report commands end quietly when their reader goes away (`evergreen train ... | head`),
        // as Unix tools do, instead of panicking on a failed print. Not for the long-running
        // commands, which write to sockets.
        restore_sigpipe();
    }
    let result = match cli.command {
        Command::Run(a) => cmd::run::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Train(a) => cmd::train::run(a),
        Command::Demo(a) => cmd::demo::run(a),
        Command::Validate(a) => cmd::config::validate(a),
        Command::Config(a) => cmd::config::run(a),
        Command::Data(a) => cmd::data::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Lineage(a) => cmd::lineage::run(a),
        Command::Models(a) => cmd::models::run(a),
        Command::Status(a) => cmd::status::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
