//! `zerogate policy validate|check|schema`: for people writing Cedar policy.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "this module is the commands' output")]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use zerogate_policy::{DecisionRequest, PolicyError, PolicyFiles};

/// `zerogate policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate the policies in a directory (every `*.cedar` file) strictly against the schema.
    Validate {
        /// A directory of `.cedar` files, or one file.
        path: PathBuf,
        /// Entities (Cedar JSON) the policies refer to: users, groups, applications, routes.
        #[arg(long, value_name = "FILE")]
        entities: Option<PathBuf>,
        /// Diagnostics as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Decide one request and explain it.
    Check {
        /// A directory of `.cedar` files, or one file.
        #[arg(long, value_name = "PATH")]
        policies: PathBuf,
        /// Entities (Cedar JSON).
        #[arg(long, value_name = "FILE")]
        entities: Option<PathBuf>,
        /// e.g. 'Zerogate::User::"alice"'.
        #[arg(long)]
        principal: String,
        /// e.g. 'Zerogate::Action::"http"'.
        #[arg(long)]
        action: String,
        /// e.g. 'Zerogate::Application::"billing"'.
        #[arg(long)]
        resource: String,
        /// The request context as JSON (see `zerogate policy schema`).
        #[arg(long, value_name = "FILE")]
        context: PathBuf,
        /// The decision as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the Cedar schema zerogate validates against.
    Schema,
}

/// Runs `zerogate policy …`.
pub fn run(args: PolicyArgs) -> Result<ExitCode> {
    match args.command {
        PolicyCommand::Schema => {
            print!("{}", zerogate_policy::SCHEMA);
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Validate { path, entities: ents, json } => {
            let files = PolicyFiles { policies: path, entities: ents };
            match files.load() {
                Ok(engine) => {
                    if json {
                        println!("{}", serde_json::json!({ "valid": true, "policies": engine.len() }));
                    } else {
                        println!("{} policies valid against the zerogate schema", engine.len());
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    if json {
                        let diagnostics = match &e {
                            PolicyError::Invalid(list) => list.iter().map(|d| d.trim().to_owned()).collect(),
                            other => vec![other.to_string()],
                        };
                        println!("{}", serde_json::json!({ "valid": false, "diagnostics": diagnostics }));
                    } else {
                        println!("invalid: {e}");
                    }
                    Ok(ExitCode::from(1))
                }
            }
        }
        PolicyCommand::Check { policies, entities: ents, principal, action, resource, context, json } => {
            let engine = PolicyFiles { policies, entities: ents }.load()?;
            let text = std::fs::read_to_string(&context).with_context(|| format!("reading `{}`", context.display()))?;
            let context = serde_json::from_str(&text).with_context(|| "the context is not JSON")?;
            let decision = engine.decide(&DecisionRequest { principal, action, resource, context });
            if json {
                println!("{}", serde_json::to_string_pretty(&decision)?);
            } else {
                let verdict = if decision.allow { "ALLOW" } else { "DENY" };
                match (decision.allow, decision.policies.is_empty(), decision.errors.is_empty()) {
                    (_, _, false) => {
                        println!("{verdict}: errors (any error denies):\n  {}", decision.errors.join("\n  "))
                    }
                    (true, _, _) => println!("{verdict}: permitted by {}", decision.policies.join(", ")),
                    (false, false, _) => println!("{verdict}: forbidden by {}", decision.policies.join(", ")),
                    (false, true, _) => println!("{verdict}: no policy permits this request (deny by default)"),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
