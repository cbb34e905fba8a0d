//! `zerogate map`: flow logs and inventory in, traffic map out.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "this module is the command's output")]

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use zerogate_flow::{Inventory, LogFormat, Progress, ReadOptions, TrafficMap, build_map, discover, render};

/// Arguments of `zerogate map`.
#[derive(Debug, Args)]
pub struct MapArgs {
    /// Flow-log files or directories (S3 layouts are searched recursively); `-` for stdin.
    #[arg(value_name = "PATH")]
    paths: Vec<String>,
    /// Inventory: `aws ec2 describe-instances` or `describe-network-interfaces` JSON,
    /// ip-ranges.json, or CSV (`cidr,name,tag=value…`). Repeatable.
    #[arg(long, short = 'i', value_name = "FILE")]
    inventory: Vec<PathBuf>,
    /// Write the map (JSON, schema zerogate.traffic-map/v1) to this file.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Format of inputs without a header line, in AWS LogFormat syntax
    /// (`${version} ${srcaddr} …`); default: the version 2 default format.
    #[arg(long, value_name = "SPEC")]
    log_format: Option<String>,
    /// Stop at the first bad record or input, with a non-zero exit.
    #[arg(long)]
    strict: bool,
    /// Print the map as JSON on stdout instead of the summary (same as `--format json`).
    #[arg(long)]
    json: bool,
    /// What to print on stdout.
    #[arg(long, value_enum, default_value_t = Format::Summary)]
    format: Format,
    /// Edges to list in the summary.
    #[arg(long, default_value_t = 15)]
    top: usize,
    /// Worker threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// No progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print SQL that computes the map where the logs live, instead of reading them:
    /// `athena` (table DDL and query) or `duckdb` (a local view over PATH and the same query).
    #[arg(long, value_enum, value_name = "ENGINE")]
    emit_sql: Option<SqlEngine>,
    /// Table name for `--emit-sql`.
    #[arg(long, default_value = "vpc_flow_logs")]
    table: String,
    /// S3 URI of `…/AWSLogs/<account>/vpcflowlogs/<region>/` for the Athena table.
    #[arg(long, default_value = "s3://YOUR-BUCKET/AWSLogs/YOUR-ACCOUNT/vpcflowlogs/YOUR-REGION/")]
    s3_location: String,
    /// Build the map from the CSV result of the `--emit-sql` query instead of reading logs.
    #[arg(long, value_name = "FILE", conflicts_with = "emit_sql")]
    from_query_result: Option<PathBuf>,
}

/// SQL engines for `--emit-sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SqlEngine {
    /// Amazon Athena (Trino).
    Athena,
    /// DuckDB, over local files.
    Duckdb,
}

/// What `map` prints on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A readable summary.
    Summary,
    /// The map as JSON.
    Json,
    /// Graphviz DOT.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

/// Runs `zerogate map`.
pub fn run(args: MapArgs) -> Result<ExitCode> {
    let mut inventory = Inventory::new();
    for path in &args.inventory {
        let content =
            std::fs::read_to_string(path).with_context(|| format!("cannot read inventory `{}`", path.display()))?;
        inventory.load(&path.display().to_string(), &content)?;
    }
    let log_format = match &args.log_format {
        Some(spec) => Some(LogFormat::from_log_format(spec).with_context(|| format!("bad --log-format `{spec}`"))?),
        None => None,
    };
    let inputs = discover(&args.paths);
    if let Some(engine) = args.emit_sql {
        return emit_sql(engine, &args, &inputs, log_format, &inventory);
    }
    if let Some(path) = &args.from_query_result {
        let content =
            std::fs::read_to_string(path).with_context(|| format!("cannot read query result `{}`", path.display()))?;
        let map = zerogate_flow::query_result::build_map(&path.display().to_string(), &content, &inventory)?;
        return output(&args, &map);
    }
    let options = ReadOptions { log_format, strict: args.strict, threads: args.threads };
    if inputs.is_empty() {
        bail!("give flow-log files or directories to read (`-` for standard input)");
    }

    let progress = Progress::default();
    let done = AtomicBool::new(false);
    let show_bar = !args.quiet && std::io::stderr().is_terminal();
    let result = std::thread::scope(|scope| {
        if show_bar {
            scope.spawn(|| draw_progress(&progress, &done));
        }
        let result = build_map(&inputs, &inventory, &options, &progress);
        done.store(true, Ordering::Relaxed);
        result
    });
    let map = match result {
        Ok(map) => map,
        Err(e) => bail!("{e} (stopped by --strict)"),
    };

    output(&args, &map)
}

fn output(args: &MapArgs, map: &TrafficMap) -> Result<ExitCode> {
    if let Some(path) = &args.output {
        // A reader never sees half a map: a temporary file beside it, synced, then renamed.
        zerogate_control::datadir::write_atomic(path, &to_json(map)?, false)?;
    }
    let format = if args.json { Format::Json } else { args.format };
    let mut stdout = std::io::stdout().lock();
    match format {
        Format::Summary => {
            stdout.write_all(crate::summary::render(map, args.top, args.output.as_deref()).as_bytes())?
        }
        Format::Json => stdout.write_all(&to_json(map)?)?,
        Format::Dot => stdout.write_all(render::to_dot(map).as_bytes())?,
        Format::Mermaid => stdout.write_all(render::to_mermaid(map).as_bytes())?,
    }
    stdout.flush()?;

    if !map.dropped.unknown_fields.is_empty() {
        eprintln!("warning: fields this build does not know were ignored: {}", map.dropped.unknown_fields.join(", "));
    }
    if map.dropped.problems > 0 && format != Format::Summary {
        eprintln!("warning: {} problems in the input (see `dropped` in the map)", map.dropped.problems);
    }
    let all_unreadable = map.inputs.iter().all(|i| i.unreadable);
    Ok(if all_unreadable { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn emit_sql(
    engine: SqlEngine,
    args: &MapArgs,
    inputs: &[zerogate_flow::InputInfo],
    log_format: Option<LogFormat>,
    inventory: &Inventory,
) -> Result<ExitCode> {
    use zerogate_segment::athena;
    let format = match log_format {
        Some(f) => f,
        None => match inputs.iter().find_map(zerogate_flow::sniff_format) {
            Some(f) => f,
            None => bail!("--emit-sql needs the log format: give --log-format, or flow-log files with a header line"),
        },
    };
    let mut sql = String::new();
    match engine {
        SqlEngine::Athena => sql.push_str(&athena::athena_ddl(&format, &args.table, &args.s3_location)),
        SqlEngine::Duckdb => {
            let files: Vec<String> = inputs.iter().filter_map(|i| i.file().map(|f| f.display().to_string())).collect();
            if files.is_empty() {
                bail!("--emit-sql duckdb needs flow-log files to read");
            }
            sql.push_str(&athena::duckdb_prelude(&format, &args.table, &files));
        }
    }
    sql.push('\n');
    sql.push_str(&athena::map_query(&format, inventory, &args.table));
    sql.push_str(";\n");
    std::io::stdout().lock().write_all(sql.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn to_json(map: &TrafficMap) -> Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(map)?;
    bytes.push(b'\n');
    Ok(bytes)
}

fn draw_progress(progress: &Progress, done: &AtomicBool) {
    let mut stderr = std::io::stderr();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        let total = progress.total.load(Ordering::Relaxed);
        let read = progress.done.load(Ordering::Relaxed);
        let line = if total > 0 {
            let fraction = (read as f64 / total as f64).min(1.0);
            let filled = (fraction * 30.0) as usize;
            format!(
                "\r[{}{}] {:>3.0}% {} / {}",
                "#".repeat(filled),
                " ".repeat(30 - filled),
                fraction * 100.0,
                crate::summary::human_bytes(read),
                crate::summary::human_bytes(total)
            )
        } else {
            format!("\r{} read", crate::summary::human_bytes(read))
        };
        let _ = stderr.write_all(line.as_bytes());
        let _ = stderr.flush();
    }
    let _ = stderr.write_all(b"\r\x1b[2K");
}
