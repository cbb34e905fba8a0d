//! `zerogate audit verify`, `tail`, `show` and `shadow`: reading the tamper-evident audit log.

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "this module is the commands' output")]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::identity_cmd::DataDirArg;

/// `zerogate audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
    /// The log [default: DATA_DIR/audit/audit.log].
    #[arg(long, value_name = "FILE", global = true)]
    log: Option<PathBuf>,
    #[command(flatten)]
    data_dir: DataDirArg,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Check the whole chain and every checkpoint signature; say where the log was tampered with.
    Verify {
        /// The checkpoint public key (base64 Ed25519) [default: DATA_DIR/audit/checkpoint.pub].
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the last records.
    Tail {
        /// How many lines.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Raw JSON lines (as stored) instead of a readable line per record.
        #[arg(long)]
        json: bool,
    },
    /// Print the records at these lines, whole: a line number (`seq`) as `tail` shows it, or
    /// `GATEWAY:SEQ` as a TCP service's PROXY header names its tunnel's record.
    Show {
        /// `SEQ` or `GATEWAY:SEQ`.
        #[arg(required = true, value_name = "REF")]
        records: Vec<String>,
    },
    /// What enforcing would refuse: per application, the requests and tunnels let through only
    /// by shadow mode, grouped by principal, action and resource, with the counts allowed and
    /// refused beside them.
    Shadow {
        /// Only records from this long ago on (`90m`, `24h`, `7d`).
        #[arg(long, value_parser = crate::identity_cmd::parse_duration, value_name = "DURATION")]
        since: Option<u64>,
        /// Groups shown per application (the JSON has them all).
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// The lines of the log and its closed segments, oldest first.
fn all_lines(log: &std::path::Path) -> Result<impl Iterator<Item = std::io::Result<String>>> {
    Ok(segment_lines(log)?.into_iter().flat_map(|(_, lines)| lines))
}

/// The lines of each of the log's segments, oldest first, with the segment's file name.
fn segment_lines(log: &std::path::Path) -> Result<Vec<(String, Lines)>> {
    if !log.exists() {
        anyhow::bail!("`{}`: no audit log there", log.display());
    }
    let files = zerogate_audit::open_segments(log).with_context(|| format!("opening `{}`", log.display()))?;
    Ok(files
        .into_iter()
        .map(|segment| {
            let path = segment.path.display().to_string();
            let lines: Lines = match segment.open() {
                Ok(file) => Box::new(BufReader::new(file).lines()),
                Err(error) => {
                    Box::new(std::iter::once(Err(std::io::Error::other(format!("opening `{path}`: {error}")))))
                }
            };
            (path, lines)
        })
        .collect())
}

/// One segment's lines, as they are read.
type Lines = Box<dyn Iterator<Item = std::io::Result<String>>>;

/// The last `count` lines of the log, reading only as many segments back as they take.
fn last_lines(log: &std::path::Path, count: usize) -> Result<Vec<String>> {
    if !log.exists() {
        anyhow::bail!("`{}`: no audit log there", log.display());
    }
    let files = zerogate_audit::open_segments(log).with_context(|| format!("opening `{}`", log.display()))?;
    // Newest file first; each file's last lines go in front of those already kept.
    let mut kept: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for segment in files.into_iter().rev() {
        let path = segment.path.clone();
        let file = segment.open().with_context(|| format!("opening `{}`", path.display()))?;
        let mut last = std::collections::VecDeque::with_capacity(count.min(4096) + 1);
        for line in BufReader::new(file).lines() {
            last.push_back(line.with_context(|| format!("reading `{}`", path.display()))?);
            if last.len() > count - kept.len().min(count) {
                last.pop_front();
            }
        }
        for line in last.into_iter().rev() {
            kept.push_front(line);
        }
        if kept.len() >= count {
            break;
        }
    }
    Ok(kept.into())
}

/// A record reference: the line, and the gateway it must come from when named.
fn record_ref(text: &str) -> Result<(Option<&str>, u64)> {
    let (gateway, seq) = match text.rsplit_once(':') {
        Some((gateway, seq)) => (Some(gateway), seq),
        None => (None, text),
    };
    let seq = seq
        .parse()
        .ok()
        .filter(|seq| *seq > 0)
        .with_context(|| format!("`{text}` is not a record reference: a line number (`seq`) or GATEWAY:SEQ"))?;
    Ok((gateway, seq))
}

/// Runs `zerogate audit …`.
pub fn run(args: AuditArgs) -> Result<ExitCode> {
    let dir = args.data_dir.get();
    let log = args.log.clone().unwrap_or_else(|| dir.audit_log_path());
    match args.command {
        AuditCommand::Verify { public_key, json } => {
            let key_path = public_key.unwrap_or_else(|| dir.audit_public_key_path());
            let key =
                std::fs::read_to_string(&key_path).with_context(|| format!("reading `{}`", key_path.display()))?;
            if !log.exists() {
                anyhow::bail!("`{}`: no audit log there", log.display());
            }
            let report =
                zerogate_audit::verify_log(&log, key.trim()).with_context(|| format!("reading `{}`", log.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{}: {} records, {} checkpoints verified{}",
                    log.display(),
                    report.records,
                    report.checkpoints,
                    if report.unsigned_tail > 0 {
                        format!(", {} records after the last checkpoint (not yet signed)", report.unsigned_tail)
                    } else {
                        String::new()
                    }
                );
                if report.files.len() > 1 {
                    println!(
                        "  in {} files: {} … {}",
                        report.files.len(),
                        report.files[0],
                        report.files[report.files.len() - 1]
                    );
                }
                if report.first_seq > 1 {
                    println!(
                        "  from line {} on: the segments before it are not here (removed or shipped), and are not checked",
                        report.first_seq
                    );
                }
                for p in &report.problems {
                    let file = if p.file.is_empty() { String::new() } else { format!("{} ", p.file) };
                    println!("  {file}line {}: {}", p.line, p.what);
                }
                if report.problem_count > report.problems.len() as u64 {
                    println!("  … {} problems in all", report.problem_count);
                }
                println!("{}", if report.is_intact() { "intact" } else { "TAMPERED" });
            }
            Ok(if report.is_intact() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        AuditCommand::Tail { lines, json } => {
            for line in last_lines(&log, lines)? {
                if json {
                    println!("{line}");
                    continue;
                }
                let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                let seq = value["seq"].as_u64().unwrap_or(0);
                if value["kind"] == "checkpoint" {
                    println!("{seq:>8} checkpoint (signed head {})", value["prev"].as_str().unwrap_or("?"));
                    continue;
                }
                let r = &value["record"];
                let text = |v: &serde_json::Value| v.as_str().map(|s| format!("{s:?}")).unwrap_or_else(|| "-".into());
                println!(
                    "{seq:>8} {} {:<11} {} {} on {} {}",
                    r["at_ms"].as_i64().map(crate::identity_cmd::when_ms).unwrap_or_default(),
                    r["decision"].as_str().unwrap_or("?"),
                    text(&r["principal"]),
                    text(&r["action"]),
                    text(&r["resource"]),
                    r["errors"]
                        .as_array()
                        .filter(|e| !e.is_empty())
                        .map(|e| format!("errors: {e:?}"))
                        .unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Show { records } => {
            let wanted = records.iter().map(|text| record_ref(text)).collect::<Result<Vec<_>>>()?;
            let mut found: Vec<Option<serde_json::Value>> = vec![None; wanted.len()];
            for line in all_lines(&log)? {
                let line = line.with_context(|| format!("reading `{}`", log.display()))?;
                // (Cheap first: most lines are not asked for.)
                let Some(seq) = line.strip_prefix("{\"seq\":").and_then(|rest| rest.split(',').next()) else {
                    continue;
                };
                let Ok(seq) = seq.parse::<u64>() else { continue };
                for (index, (_, wanted)) in wanted.iter().enumerate() {
                    if *wanted == seq {
                        found[index] = Some(serde_json::from_str(&line).with_context(|| format!("line {seq}"))?);
                    }
                }
            }
            for ((text, (gateway, seq)), value) in records.iter().zip(&wanted).zip(&found) {
                let value =
                    value.as_ref().with_context(|| format!("`{text}`: no line {seq} in `{}`", log.display()))?;
                if let Some(gateway) = gateway {
                    let wrote = value["record"]["gateway"].as_str().unwrap_or("(a checkpoint)");
                    if wrote != *gateway {
                        anyhow::bail!(
                            "`{text}`: line {seq} of `{}` was written by `{wrote}`, not `{gateway}`: the record is in `{gateway}`'s log",
                            log.display()
                        );
                    }
                }
                println!("{}", serde_json::to_string_pretty(value)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Shadow { since, limit, json } => {
            let since_ms = since.map(|seconds| {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                let from = now.saturating_sub(std::time::Duration::from_secs(seconds));
                i64::try_from(from.as_millis()).unwrap_or(i64::MAX)
            });
            // The error names the segment file and the line in it.
            let report = zerogate_audit::shadow::shadow_report(segment_lines(&log)?, since_ms)
                .map_err(|e| anyhow::anyhow!("audit log: {e}"))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", crate::shadow_report::render(&report, limit));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
