//! `zerogate`, the command line: thin subcommands over the libraries, human and JSON output,
//! progress bars and exit codes. Logic that decides anything lives in the library crates.

mod map_cmd;
mod summary;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// zerogate: zero trust access for cloud estates.
#[derive(Debug, Parser)]
#[command(name = "zerogate", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Map who talks to whom from AWS VPC and Transit Gateway flow logs.
    Map(map_cmd::MapArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Map(args) => map_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            #[allow(clippy::print_stderr, reason = "the binary reports its own errors")]
            {
                eprintln!("error: {error:#}");
            }
            ExitCode::FAILURE
        }
    }
}
