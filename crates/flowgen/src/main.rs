//! `zerogate-flowgen`: writes a generated estate's flow logs, inventory and ground truth.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use zerogate_flowgen::{Format, Layout, Spec, generate};

/// Generate realistic AWS VPC flow logs with known ground truth.
#[derive(Debug, Parser)]
#[command(name = "zerogate-flowgen", version)]
struct Args {
    /// Output directory (flow logs, inventory.csv, ip-ranges.json, truth.json).
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// About this many records.
    #[arg(long, default_value_t = 10_000)]
    records: u64,
    /// Share of records that are internet scans and backscatter.
    #[arg(long, default_value_t = 0.1)]
    scan_share: f64,
    /// Number of files.
    #[arg(long, default_value_t = 4)]
    files: usize,
    /// Record format.
    #[arg(long, value_enum, default_value_t = Format::Mixed)]
    format: Format,
    /// Write plain text instead of gzip.
    #[arg(long)]
    plain: bool,
    /// Directory layout.
    #[arg(long, value_enum, default_value_t = Layout::Default)]
    layout: Layout,
    /// Days of traffic.
    #[arg(long, default_value_t = 1)]
    days: u64,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let spec = Spec {
        seed: a.seed,
        records: a.records,
        scan_share: a.scan_share,
        files: a.files,
        format: a.format,
        gzip: !a.plain,
        layout: a.layout,
        days: a.days,
        ..Spec::default()
    };
    let truth = generate(&a.out, &spec)?;
    #[allow(clippy::print_stderr, reason = "the tool's one line of output")]
    {
        eprintln!(
            "wrote {} records ({} noise, {} connections, {} real edges) in {} files under {}",
            truth.records,
            truth.noise_records,
            truth.connections,
            truth.edges.len(),
            truth.files.len(),
            a.out.display()
        );
    }
    Ok(())
}
