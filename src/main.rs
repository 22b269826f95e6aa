//! `jt1078-gateway` binary: CLI → config → tracing → app. Nothing else.

use clap::Parser;

use jt1078_gateway::cli::Cli;

/// jemalloc instead of glibc malloc: frames of 1-100 KB are allocated and freed on
/// different threads at high rates, which glibc serves from its slow path (measured in
/// docs/benchmarks.md). Its background thread gives freed pages back to the kernel a
/// second after they are freed (`.cargo/config.toml`), also when the threads that freed
/// them have gone idle, as the embedded broker's do after a flood (docs/architecture.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
