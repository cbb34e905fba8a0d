//! `zerogate simulate` and `zerogate drift`: replay flows (flow logs, or a map already built from
//! them) against a Cedar policy set; say what it would allow and block, and which rule matched
//! each flow; report new flows no rule covers and rules no flow uses.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "this module is the commands' output")]

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use zerogate_flow::{Inventory, Progress, ReadOptions, build_map, discover};
use zerogate_policy::{PolicyEngine, read_entities, read_sources};
use zerogate_segment::recommend::{MapInput, parse_map};
use zerogate_segment::simulate::{Replayed, Simulation, Verdict, drift, simulate};

/// What both commands read.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The policy: a `.cedar` file or a directory of them (for example `zerogate recommend -o DIR`).
    #[arg(long, value_name = "PATH")]
    policy: PathBuf,
    /// The entities the policy refers to (default: `entities.json` beside or inside PATH).
    #[arg(long, value_name = "FILE")]
    entities: Option<PathBuf>,
    /// Flow logs (files or directories), replayed through the same reader as `zerogate map`.
    #[arg(long, value_name = "PATH", num_args = 1.., required_unless_present = "map", conflicts_with = "map")]
    flows: Vec<String>,
    /// Inventory files for --flows, as for `zerogate map -i`.
    #[arg(long, short = 'i', value_name = "FILE")]
    inventory: Vec<PathBuf>,
    /// A traffic map instead of flow logs.
    #[arg(long, value_name = "FILE")]
    map: Option<PathBuf>,
    /// Everything as JSON.
    #[arg(long)]
    json: bool,
}

/// `zerogate simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    replay: ReplayArgs,
}

/// `zerogate drift`.
#[derive(Debug, Args)]
pub struct DriftArgs {
    #[command(flatten)]
    replay: ReplayArgs,
    /// A rule is unused when no flow used it in this many days before the flows' end.
    #[arg(long, default_value_t = 30)]
    unused_days: u64,
}

struct Loaded {
    map: MapInput,
    engine: PolicyEngine,
    entities: serde_json::Value,
}

fn load(args: &ReplayArgs) -> Result<Loaded> {
    let sources = read_sources(&args.policy)?;
    if sources.is_empty() {
        bail!("{}: no .cedar files", args.policy.display());
    }
    let entities_path = args.entities.clone().or_else(|| {
        let base = if args.policy.is_dir() { args.policy.clone() } else { args.policy.parent()?.to_path_buf() };
        Some(base.join("entities.json")).filter(|p| p.is_file())
    });
    let entities = read_entities(entities_path.as_deref())?;
    let engine = PolicyEngine::load(&sources, entities.clone())?;
    let map = match &args.map {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
            parse_map(&path.display().to_string(), &bytes)?
        }
        None => {
            let mut inventory = Inventory::new();
            for path in &args.inventory {
                let content = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read inventory `{}`", path.display()))?;
                inventory.load(&path.display().to_string(), &content)?;
            }
            let inputs = discover(&args.flows);
            let map = build_map(&inputs, &inventory, &ReadOptions::default(), &Progress::default())?;
            if map.dropped.problems > 0 {
                eprintln!(
                    "warning: {} problems in the flow logs (run `zerogate map` to see them)",
                    map.dropped.problems
                );
            }
            parse_map("(flows)", &serde_json::to_vec(&map)?)?
        }
    };
    Ok(Loaded { map, engine, entities })
}

fn line(edge: &Replayed) -> String {
    let rule = match (edge.verdict, edge.policies.first()) {
        (Verdict::EntryPoint, _) => "internet entry point: for the security groups".to_owned(),
        (Verdict::Allowed, Some(policy)) => format!("allowed by {policy}"),
        (_, _) if !edge.errors.is_empty() => format!("blocked: {}", edge.errors.join("; ")),
        (_, Some(policy)) => format!("blocked by {policy}"),
        (_, None) => "blocked: no rule permits it".to_owned(),
    };
    format!("  {:<24} {:<24} {:<10} {:>9} conn  {}", edge.client, edge.server, edge.service, edge.connections, rule)
}

fn summary(simulation: &Simulation) -> String {
    let mut out = String::new();
    for (verdict, totals) in &simulation.totals {
        let _ = writeln!(
            out,
            "{verdict:>12}: {} edge(s), {} connection(s), {} byte(s)",
            totals.edges, totals.connections, totals.bytes
        );
    }
    out
}

/// Runs `zerogate simulate`.
pub fn run_simulate(args: SimulateArgs) -> Result<ExitCode> {
    let loaded = load(&args.replay)?;
    let simulation = simulate(&loaded.map, &loaded.engine, &loaded.entities);
    let mut stdout = std::io::stdout().lock();
    if args.replay.json {
        stdout.write_all((serde_json::to_string_pretty(&simulation)? + "\n").as_bytes())?;
    } else {
        let mut out = format!("zerogate simulate: {} edge(s) replayed\n", simulation.edges.len());
        out.push_str(&summary(&simulation));
        out.push('\n');
        for edge in &simulation.edges {
            out.push_str(&line(edge));
            out.push('\n');
        }
        stdout.write_all(out.as_bytes())?;
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `zerogate drift`; exits 1 when there is drift, so a schedule can alert on it.
pub fn run_drift(args: DriftArgs) -> Result<ExitCode> {
    let loaded = load(&args.replay)?;
    let simulation = simulate(&loaded.map, &loaded.engine, &loaded.entities);
    let report = drift(&loaded.map, &simulation, &loaded.engine.policy_ids(), args.unused_days);
    let mut stdout = std::io::stdout().lock();
    if args.replay.json {
        stdout.write_all((serde_json::to_string_pretty(&report)? + "\n").as_bytes())?;
    } else {
        let mut out = format!("New flows no rule covers: {}\n", report.uncovered.len());
        for edge in &report.uncovered {
            out.push_str(&line(edge));
            out.push('\n');
        }
        let _ =
            writeln!(out, "\nRules no flow used in the last {} day(s): {}", report.unused_days, report.unused.len());
        for rule in &report.unused {
            let _ = writeln!(out, "  {:<40} last used {}", rule.policy, rule.last_used.as_deref().unwrap_or("never"));
        }
        stdout.write_all(out.as_bytes())?;
    }
    stdout.flush()?;
    let drifted = !report.uncovered.is_empty() || !report.unused.is_empty();
    Ok(if drifted { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
