//! `zerogate recommend MAP`: least-privilege segment rules from a traffic map, as a readable
//! report, JSON, or Cedar policies with their entities.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "this module is the command's output")]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use zerogate_segment::cedar::to_cedar;
use zerogate_segment::recommend::{Options, Recommendation, parse_map, recommend};

/// `zerogate recommend`.
#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// A traffic map written by `zerogate map -o map.json`.
    map: PathBuf,
    /// Tag naming an asset's segment; repeat for a fallback order (default: segment, tier, role, app).
    #[arg(long = "segment-tag", value_name = "KEY")]
    segment_tags: Vec<String>,
    /// A JSON object mapping asset ids or names to segments, overriding tags.
    #[arg(long, value_name = "FILE")]
    segments: Option<PathBuf>,
    /// Also make rules from edges oriented by port ranges alone (held back by default).
    #[arg(long)]
    include_low_confidence: bool,
    /// Keep assets that no tag or override places as segments of their own, instead of grouping
    /// those that behave alike.
    #[arg(long)]
    no_behaviour_grouping: bool,
    /// AWS's security-group rule limit per direction (60 unless your quota was raised); ports are
    /// merged into ranges only when a group would exceed it.
    #[arg(long, default_value_t = zerogate_segment::aws::DEFAULT_RULES_PER_GROUP)]
    rules_per_group: usize,
    /// What to print.
    #[arg(long, value_enum, default_value_t = Format::Report)]
    format: Format,
    /// Write recommended.cedar, entities.json, security-groups.tf.json,
    /// security-groups.cfn.json, recommendation.json and report.txt here.
    #[arg(long, short = 'o', value_name = "DIR")]
    out_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A readable report.
    Report,
    /// Everything, as JSON.
    Json,
    /// Cedar policies.
    Cedar,
    /// Security groups as Terraform JSON.
    Terraform,
    /// Security groups as a CloudFormation template (JSON).
    Cloudformation,
}

/// Runs `zerogate recommend`.
pub fn run(args: RecommendArgs) -> Result<ExitCode> {
    let bytes = std::fs::read(&args.map).with_context(|| format!("{}: cannot read", args.map.display()))?;
    let map = parse_map(&args.map.display().to_string(), &bytes)?;
    let mut options = Options {
        include_low_confidence: args.include_low_confidence,
        group_by_behaviour: !args.no_behaviour_grouping,
        ..Options::default()
    };
    if !args.segment_tags.is_empty() {
        options.segment_tags = args.segment_tags.clone();
    }
    if let Some(path) = &args.segments {
        let text = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        options.overrides = serde_json::from_slice::<BTreeMap<String, String>>(&text)
            .with_context(|| format!("{}: not a JSON object of asset → segment strings", path.display()))?;
    }
    let recommendation = recommend(&map, &options);
    let cedar = to_cedar(&recommendation);
    // What zerogate writes must be what zerogate accepts: validate before anything is written.
    let sources = [("recommended.cedar".to_owned(), cedar.policies.clone())];
    if let Err(error) = zerogate_policy::PolicyEngine::load(&sources, cedar.entities.clone()) {
        bail!("internal error: the recommended policy does not validate: {error}");
    }
    let groups = zerogate_segment::aws::security_groups(&recommendation, &map, args.rules_per_group)?;
    let terraform = serde_json::to_string_pretty(&zerogate_segment::aws::terraform_json(&groups))? + "\n";
    let cloudformation = serde_json::to_string_pretty(&zerogate_segment::aws::cloudformation_json(&groups))? + "\n";
    let json = serde_json::to_string_pretty(&recommendation)? + "\n";
    let entities = serde_json::to_string_pretty(&cedar.entities)? + "\n";
    let mut report = render_report(&recommendation);
    let _ =
        writeln!(report, "\nSecurity groups: {} (Terraform JSON and CloudFormation with -o DIR)", groups.groups.len());
    for note in &groups.notes {
        let _ = writeln!(report, "  note: {note}");
    }
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
        for (name, content) in [
            ("recommended.cedar", cedar.policies.as_bytes()),
            ("entities.json", entities.as_bytes()),
            ("security-groups.tf.json", terraform.as_bytes()),
            ("security-groups.cfn.json", cloudformation.as_bytes()),
            ("recommendation.json", json.as_bytes()),
            ("report.txt", report.as_bytes()),
        ] {
            zerogate_control::datadir::write_atomic(&dir.join(name), content, false)?;
        }
    }
    let mut stdout = std::io::stdout().lock();
    match args.format {
        Format::Report => stdout.write_all(report.as_bytes())?,
        Format::Json => stdout.write_all(json.as_bytes())?,
        Format::Cedar => stdout.write_all(cedar.policies.as_bytes())?,
        Format::Terraform => stdout.write_all(terraform.as_bytes())?,
        Format::Cloudformation => stdout.write_all(cloudformation.as_bytes())?,
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", units[unit]) }
}

fn render_report(rec: &Recommendation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "zerogate recommend: {} segment(s), {} rule(s), {} edge(s) held back; window {} to {}\n",
        rec.segments.len(),
        rec.rules.len(),
        rec.held_back.len(),
        rec.window.0.as_deref().unwrap_or("?"),
        rec.window.1.as_deref().unwrap_or("?")
    );
    let _ = writeln!(out, "Start here (segments ranked by what they protect):");
    for (rank, priority) in rec.priorities.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {:>2}. {:<24} score {:>4}  {}",
            rank + 1,
            priority.segment,
            priority.score,
            priority.reasons.join(", ")
        );
    }
    let _ = writeln!(out, "\nAllow rules (everything else denied):");
    let _ = writeln!(
        out,
        "  {:<20} {:<20} {:<10} {:>12} {:>10} {:>9}  {:<11} orientation",
        "client", "server", "service", "connections", "bytes", "days/span", "stability"
    );
    for rule in &rec.rules {
        let e = &rule.evidence;
        let _ = writeln!(
            out,
            "  {:<20} {:<20} {:<10} {:>12} {:>10} {:>9}  {:<11} {}",
            rule.client,
            rule.server,
            format!("{}/{}", rule.protocol_name, rule.port),
            e.connections,
            human_bytes(e.bytes),
            format!("{}/{}", e.days_seen.map_or("?".into(), |d| d.to_string()), e.span_days),
            format!("{:?}", rule.stability).to_lowercase(),
            e.orientation
        );
    }
    if !rec.held_back.is_empty() {
        let _ = writeln!(out, "\nHeld back (not rules; review):");
        for held in &rec.held_back {
            let _ = writeln!(
                out,
                "  {} -> {} {}/{}: {}",
                held.client, held.server, held.protocol_name, held.port, held.reason
            );
        }
    }
    let _ = writeln!(out, "\nPlatform services flow logs never show, allowed by default:");
    for rule in &rec.platform {
        let _ = writeln!(out, "  {:<28} {:<16} {}: {}", rule.name, rule.service, rule.destination, rule.why);
    }
    let _ = writeln!(out, "\nSegments:");
    for segment in &rec.segments {
        let _ = writeln!(
            out,
            "  {:<24} {:>4} member(s)  from {}{}",
            segment.name,
            segment.members.len(),
            segment.source,
            segment.sensitivity.as_deref().map(|s| format!(", sensitivity {s}")).unwrap_or_default()
        );
    }
    out
}
