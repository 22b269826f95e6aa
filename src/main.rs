//! `jt1078-gateway` binary: CLI → config → tracing → app. Nothing else.

use clap::Parser;

use jt1078_gateway::cli::Cli;

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
