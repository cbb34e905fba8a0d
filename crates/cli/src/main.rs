//! `zerogate`, the command line: thin subcommands over the libraries, human and JSON output,
//! progress bars and exit codes. Logic that decides anything lives in the library crates.

mod audit_cmd;
mod connect_cmd;
mod gateway_cmd;
mod identity_cmd;
mod map_cmd;
mod policy_cmd;
mod recommend_cmd;
mod revoke_cmd;
mod shadow_report;
mod simulate_cmd;
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
    /// The embedded default in one process: CA, control plane, and a gateway in front of a demo
    /// application, on localhost. Prints what to run next.
    Up(gateway_cmd::UpArgs),
    /// Run the gateway in front of the applications of a configuration file.
    Gateway(gateway_cmd::GatewayArgs),
    /// Reach a TCP service behind the gateway from a local port, with this identity's
    /// certificate (`psql -h 127.0.0.1 -p PORT`).
    Connect(connect_cmd::ConnectArgs),
    /// Map who talks to whom from AWS VPC and Transit Gateway flow logs.
    Map(map_cmd::MapArgs),
    /// Least-privilege segment rules from a traffic map: a report, JSON, or Cedar policies.
    Recommend(recommend_cmd::RecommendArgs),
    /// Replay flows against a policy: what it would allow and block, and the rule behind each.
    Simulate(simulate_cmd::SimulateArgs),
    /// Flows no rule covers, and rules no flow used for N days (exit code 1 when there is drift).
    Drift(simulate_cmd::DriftArgs),
    /// The certificate authority: init, tokens, issue, list, revoke, CRL, bundle, events.
    Ca(identity_cmd::CaArgs),
    /// Serve the control plane's identity endpoints (enrollment, renewal, bundle, CRL) over TLS.
    Server(identity_cmd::ServerArgs),
    /// Enroll this device or workload with a one-time token (or renew with --renew).
    Enroll(identity_cmd::EnrollArgs),
    /// Keep this device's or workload's certificate fresh: renew at half its lifetime.
    Agent(identity_cmd::AgentArgs),
    /// The tamper-evident audit log: verify the chain and its signed checkpoints, show the tail.
    Audit(audit_cmd::AuditArgs),
    /// Cedar policy: validate against zerogate's schema, explain a decision, print the schema.
    Policy(policy_cmd::PolicyArgs),
    /// Revoke a credential (an OIDC token by jti, a session, …) or a principal (every credential of
    /// a user, device, workload or API client): refused from the next request on.
    Revoke(revoke_cmd::RevokeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(args) => gateway_cmd::run_up(args),
        Command::Gateway(args) => gateway_cmd::run_gateway(args),
        Command::Connect(args) => connect_cmd::run(args),
        Command::Map(args) => map_cmd::run(args),
        Command::Recommend(args) => recommend_cmd::run(args),
        Command::Simulate(args) => simulate_cmd::run_simulate(args),
        Command::Drift(args) => simulate_cmd::run_drift(args),
        Command::Ca(args) => identity_cmd::run_ca(args),
        Command::Server(args) => identity_cmd::run_server(args),
        Command::Enroll(args) => identity_cmd::run_enroll(args),
        Command::Agent(args) => identity_cmd::run_agent(args),
        Command::Revoke(args) => revoke_cmd::run(args),
        Command::Audit(args) => audit_cmd::run(args),
        Command::Policy(args) => policy_cmd::run(args),
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
