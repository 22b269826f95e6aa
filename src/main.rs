//! `jt1078-gateway` binary: CLI → config → tracing → app. Nothing else.

use clap::Parser;

use jt1078_gateway::cli::Cli;

/// mimalloc instead of glibc malloc: frames of 1-100 KB are allocated and freed on
/// different threads at high rates, which glibc serves from its slow path (measured in
/// docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match Cli::parse().run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("jt1078-gateway: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
