//! Inputs: files, directories laid out by S3 delivery, gzip, Parquet and standard input, read in
//! parallel into partial maps. Bad input is counted with file, line and reason; the rest counts.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;

use serde::Serialize;

use crate::aggregate::{FormatFacts, Partial};
use crate::field::Field;
use crate::format::{LogFormat, looks_like_header};
use crate::inventory::Inventory;
use crate::map::{TrafficMap, finalize};
use crate::record::{LineParser, Record};

/// Read in chunks of this size; gzip is inflated on its own thread in chunks of this size.
const CHUNK: usize = 1 << 20;
/// The read buffer in front of an input: enough to tell its kind; larger reads bypass it.
const SNIFF: usize = 64 * 1024;
/// Longer lines are refused (a flow-log record is a few hundred bytes).
const MAX_LINE: usize = 64 * 1024;

/// One input to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputInfo {
    /// The path as shown to the user; `-` for standard input.
    pub path: String,
    /// What the S3 key layout says about the object, if it follows one.
    pub s3: Option<S3Key>,
    location: Location,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    File(PathBuf),
    Stdin,
    Missing(String),
}

/// What an S3 delivery key tells about a flow-log object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct S3Key {
    /// `default`, `hive`, `hourly` or `hive-hourly`.
    pub layout: String,
    /// Account that owns the flow log.
    pub account_id: String,
    /// Region.
    pub region: String,
    /// `YYYY-MM-DD` of the partition.
    pub date: String,
    /// Hour of the partition, in hourly layouts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hour: Option<String>,
    /// Flow log id from the file name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_log_id: Option<String>,
    /// Start of the 5-minute file window from the file name (`YYYYMMDDTHHmmZ`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_window: Option<String>,
}

/// Options for reading.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// The format of inputs without a header line (default: the version 2 format).
    pub log_format: Option<LogFormat>,
    /// Stop at the first problem.
    pub strict: bool,
    /// Worker threads (0: one per core).
    pub threads: usize,
}

/// Progress of a run, for a progress bar: bytes of input consumed and in all.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes read so far (compressed bytes for gzip).
    pub done: AtomicU64,
    /// Bytes in all (0 when unknown, as for standard input).
    pub total: AtomicU64,
}

/// The first problem met under `--strict`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: {reason}")]
pub struct StrictError {
    /// Input path.
    pub path: String,
    /// Line (0: the input as a whole).
    pub line: u64,
    /// Why.
    pub reason: String,
}

/// Expands paths into inputs: `-` is standard input, a directory is searched recursively for
/// flow-log objects (`*.log`, `*.gz`, `*.parquet`, `*.txt`), sorted by path.
pub fn discover(paths: &[String]) -> Vec<InputInfo> {
    let mut inputs = Vec::new();
    for path in paths {
        if path == "-" {
            inputs.push(InputInfo { path: "-".into(), s3: None, location: Location::Stdin });
            continue;
        }
        let p = Path::new(path);
        match std::fs::metadata(p) {
            Ok(meta) if meta.is_dir() => {
                let mut found = Vec::new();
                let mut errors = Vec::new();
                walk(p, &mut found, &mut errors);
                found.sort();
                for f in found {
                    let display = f.display().to_string();
                    inputs.push(InputInfo { s3: parse_s3_key(&display), path: display, location: Location::File(f) });
                }
                for (display, reason) in errors {
                    inputs.push(InputInfo { path: display, s3: None, location: Location::Missing(reason) });
                }
            }
            Ok(_) => inputs.push(InputInfo {
                path: path.clone(),
                s3: parse_s3_key(path),
                location: Location::File(p.to_path_buf()),
            }),
            Err(e) => {
                inputs.push(InputInfo { path: path.clone(), s3: None, location: Location::Missing(e.to_string()) })
            }
        }
    }
    inputs
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>, errors: &mut Vec<(String, String)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push((dir.display().to_string(), e.to_string()));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => walk(&path, found, errors),
            Ok(_) => {
                let lower = name.to_ascii_lowercase();
                if [".log", ".gz", ".parquet", ".txt"].iter().any(|ext| lower.ends_with(ext)) {
                    found.push(path);
                }
            }
            Err(e) => errors.push((path.display().to_string(), e.to_string())),
        }
    }
}

impl InputInfo {
    /// The input of a map built from a query result.
    pub fn query_result(path: &str) -> Self {
        Self { path: path.to_owned(), s3: None, location: Location::Missing("a query result".into()) }
    }

    /// The file behind the input, if it is one.
    pub fn file(&self) -> Option<&Path> {
        match &self.location {
            Location::File(p) => Some(p),
            _ => None,
        }
    }
}

/// The format of a text input, from its header line (gzip or not); `None` when the first line
/// is not a header or the input cannot be read.
pub fn sniff_format(input: &InputInfo) -> Option<LogFormat> {
    let file = File::open(input.file()?).ok()?;
    let mut reader = BufReader::new(file);
    let gzip = reader.fill_buf().ok()?.starts_with(&[0x1f, 0x8b]);
    let mut line = String::new();
    if gzip {
        BufReader::new(flate2::bufread::MultiGzDecoder::new(reader)).read_line(&mut line).ok()?;
    } else {
        reader.read_line(&mut line).ok()?;
    }
    let line = line.trim_end();
    if looks_like_header(line) { LogFormat::from_header(line).ok() } else { None }
}

/// Reads what an S3 delivery key says: the four layouts AWS documents (default, Hive-compatible,
/// hourly, both) and the file name `account_vpcflowlogs_region_flowlogid_YYYYMMDDTHHmmZ_hash`.
pub fn parse_s3_key(path: &str) -> Option<S3Key> {
    let parts: Vec<&str> = path.split(['/', '\\']).collect();
    let at = parts.iter().position(|p| *p == "AWSLogs")?;
    let rest = parts.get(at + 1..)?;
    let file = rest.last()?;
    let dirs = rest.get(..rest.len().saturating_sub(1))?;
    let hive = dirs.first().is_some_and(|d| d.starts_with("aws-account-id="));
    let value = |d: &str, key: &str| d.strip_prefix(key).map(str::to_owned);
    let (account_id, region, y, m, d, hour) = if hive {
        let service = dirs.get(1)?;
        if !(service == &"aws-service=vpcflowlogs" || service == &"service=vpcflowlogs") {
            return None;
        }
        (
            value(dirs.first()?, "aws-account-id=")?,
            value(dirs.get(2)?, "aws-region=")?,
            value(dirs.get(3)?, "year=")?,
            value(dirs.get(4)?, "month=")?,
            value(dirs.get(5)?, "day=")?,
            dirs.get(6).and_then(|h| value(h, "hour=")),
        )
    } else {
        if dirs.get(1) != Some(&"vpcflowlogs") {
            return None;
        }
        (
            (*dirs.first()?).to_owned(),
            (*dirs.get(2)?).to_owned(),
            (*dirs.get(3)?).to_owned(),
            (*dirs.get(4)?).to_owned(),
            (*dirs.get(5)?).to_owned(),
            dirs.get(6).map(|h| (*h).to_owned()),
        )
    };
    let layout = match (hive, hour.is_some()) {
        (false, false) => "default",
        (true, false) => "hive",
        (false, true) => "hourly",
        (true, true) => "hive-hourly",
    };
    // account_vpcflowlogs_region_fl-id_YYYYMMDDTHHmmZ_hash.log.gz
    let stem = file.split('.').next().unwrap_or_default();
    let fields: Vec<&str> = stem.split('_').collect();
    let (flow_log_id, file_window) = if fields.len() >= 6 && fields.get(1) == Some(&"vpcflowlogs") {
        let n = fields.len();
        (fields.get(3..n - 2).map(|f| f.join("_")), fields.get(n - 2).map(|s| (*s).to_owned()))
    } else {
        (None, None)
    };
    Some(S3Key {
        layout: layout.into(),
        account_id,
        region,
        date: format!("{y}-{m}-{d}"),
        hour,
        flow_log_id,
        file_window,
    })
}

/// Reads every input and builds the traffic map, with one worker per core.
pub fn build_map(
    inputs: &[InputInfo],
    inventory: &Inventory,
    options: &ReadOptions,
    progress: &Progress,
) -> Result<TrafficMap, StrictError> {
    let total: u64 = inputs
        .iter()
        .filter_map(|i| match &i.location {
            Location::File(p) => std::fs::metadata(p).ok().map(|m| m.len()),
            _ => None,
        })
        .sum();
    progress.total.store(total, Ordering::Relaxed);
    let threads = if options.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        options.threads
    }
    .clamp(1, inputs.len().max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let partials: Vec<Partial> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut acc = Partial::default();
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(input) = inputs.get(index) else {
                            break;
                        };
                        read_input(input, index, inventory, options, progress, &mut acc);
                        if options.strict && acc.totals.bad > 0 {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    acc
                })
            })
            .collect();
        // A worker that panicked is a bug: surface it, never return a map that silently lacks
        // its inputs.
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    let mut merged = Partial::default();
    for p in partials {
        merged.merge(p);
    }
    if options.strict
        && let Some(first) = merged.problems.iter().min()
    {
        return Err(StrictError {
            path: inputs.get(first.input).map(|i| i.path.clone()).unwrap_or_default(),
            line: first.line,
            reason: first.reason.clone(),
        });
    }
    Ok(finalize(merged, inventory, inputs))
}

/// Counts bytes as they are read, for the progress bar.
struct Counting<'a, R> {
    inner: R,
    progress: &'a Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.done.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn read_input(
    input: &InputInfo,
    index: usize,
    inventory: &Inventory,
    options: &ReadOptions,
    progress: &Progress,
    part: &mut Partial,
) {
    let mut lines = Lines::new(index, inventory, options, part);
    let result = match &input.location {
        Location::Missing(reason) => Err(io::Error::other(reason.clone())),
        Location::Stdin => {
            let reader = BufReader::with_capacity(SNIFF, Counting { inner: io::stdin(), progress });
            read_stream(reader, &mut lines, None)
        }
        Location::File(path) => match File::open(path) {
            Ok(file) => {
                let reader = BufReader::with_capacity(SNIFF, Counting { inner: file, progress });
                read_stream(reader, &mut lines, Some(path))
            }
            Err(e) => Err(e),
        },
    };
    if result.is_ok() {
        lines.finish();
    } // else the last partial line is the cut itself: reported below, not parsed
    lines.part.settle(inventory, true);
    if let Err(e) = result {
        let at = lines.line;
        let acc = lines.part.input_mut(index);
        if at == 0 {
            acc.unreadable = true;
            lines.part.problem(index, 0, format!("cannot read: {e}"), "unreadable input");
        } else {
            acc.truncated = true;
            lines.part.problem(index, at, format!("input ends early after line {at}: {e}"), "truncated input");
        }
    }
}

fn read_stream<R: BufRead + Send>(mut reader: R, lines: &mut Lines<'_>, path: Option<&Path>) -> io::Result<()> {
    let head = reader.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        lines.compression("gzip");
        inflate_in_background(reader, lines)
    } else if head.starts_with(b"PAR1") {
        lines.compression("parquet");
        match path {
            Some(path) => read_parquet(path, lines),
            None => Err(io::Error::other("Parquet on standard input is not supported: pass the file")),
        }
    } else {
        lines.compression("none");
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            lines.feed(buf.get(..n).unwrap_or_default());
        }
    }
}

/// Inflates on a second thread while this one parses, so a single large object reads at the
/// speed of decompression.
fn inflate_in_background<R: BufRead + Send>(reader: R, lines: &mut Lines<'_>) -> io::Result<()> {
    let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(4);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut decoder = flate2::bufread::MultiGzDecoder::new(reader);
            loop {
                let mut buf = empty_rx.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
                buf.resize(CHUNK, 0);
                let mut filled = 0;
                let result = loop {
                    match decoder.read(buf.get_mut(filled..).unwrap_or_default()) {
                        Ok(0) => break Ok(true),
                        Ok(n) => {
                            filled += n;
                            if filled == buf.len() {
                                break Ok(false);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(filled);
                match result {
                    Ok(done) => {
                        if full_tx.send(Ok(buf)).is_err() || done {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = full_tx.send(Ok(buf));
                        let _ = full_tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        for chunk in full_rx {
            let chunk = chunk?;
            lines.feed(&chunk);
            let _ = empty_tx.send(chunk);
        }
        Ok(())
    })
}

#[cfg(feature = "parquet")]
fn read_parquet(path: &Path, lines: &mut Lines<'_>) -> io::Result<()> {
    crate::parquet_input::read(path, lines)
}

#[cfg(not(feature = "parquet"))]
fn read_parquet(_path: &Path, _lines: &mut Lines<'_>) -> io::Result<()> {
    Err(io::Error::other("this build of zerogate reads no Parquet (built without the `parquet` feature)"))
}

/// Splits chunks into lines and lines into records, following header lines as they come.
pub(crate) struct Lines<'a> {
    index: usize,
    inventory: &'a Inventory,
    options: &'a ReadOptions,
    pub(crate) part: &'a mut Partial,
    parser: Option<(LineParser, FormatFacts)>,
    skipping: bool,
    carry: Vec<u8>,
    overlong: bool,
    pub(crate) line: u64,
}

impl<'a> Lines<'a> {
    fn new(index: usize, inventory: &'a Inventory, options: &'a ReadOptions, part: &'a mut Partial) -> Self {
        Self {
            index,
            inventory,
            options,
            part,
            parser: None,
            skipping: false,
            carry: Vec::new(),
            overlong: false,
            line: 0,
        }
    }

    fn compression(&mut self, name: &'static str) {
        self.part.input_mut(self.index).compression = Some(name);
    }

    fn stopped(&self) -> bool {
        self.options.strict && self.part.totals.bad > 0
    }

    /// Feeds a chunk of bytes; lines may span chunks.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) {
        self.part.input_mut(self.index).bytes_read += chunk.len() as u64;
        if !self.carry.is_empty() || self.overlong {
            match memchr::memchr(b'\n', chunk) {
                Some(at) => {
                    let (head, rest) = chunk.split_at(at);
                    chunk = rest.get(1..).unwrap_or_default();
                    if self.overlong {
                        self.overlong = false;
                        self.carry.clear();
                    } else {
                        let mut line = std::mem::take(&mut self.carry);
                        line.extend_from_slice(head);
                        self.line(&line);
                        line.clear();
                        self.carry = line;
                    }
                }
                None => {
                    self.extend_carry(chunk);
                    return;
                }
            }
        }
        while let Some(at) = memchr::memchr(b'\n', chunk) {
            let (line, rest) = chunk.split_at(at);
            self.line(line);
            chunk = rest.get(1..).unwrap_or_default();
            if self.stopped() {
                return;
            }
        }
        self.extend_carry(chunk);
    }

    fn extend_carry(&mut self, bytes: &[u8]) {
        if self.overlong {
            return;
        }
        if self.carry.len() + bytes.len() > MAX_LINE {
            self.line += 1;
            self.part.problem(self.index, self.line, format!("line longer than {MAX_LINE} bytes"), "line too long");
            self.overlong = true;
            self.carry.clear();
            return;
        }
        self.carry.extend_from_slice(bytes);
    }

    fn finish(&mut self) {
        if !self.carry.is_empty() && !self.overlong {
            let line = std::mem::take(&mut self.carry);
            self.line(&line);
        }
    }

    /// Handles one line (without its newline).
    pub(crate) fn line(&mut self, raw: &[u8]) {
        if self.stopped() {
            return;
        }
        self.line += 1;
        self.part.input_mut(self.index).lines += 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.first().is_none_or(u8::is_ascii_whitespace) && line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        if line.first().is_some_and(u8::is_ascii_lowercase)
            && let Ok(text) = std::str::from_utf8(line)
            && looks_like_header(text)
        {
            match LogFormat::from_header(text) {
                Ok(format) => self.set_format(&format),
                Err(e) => {
                    self.parser = None;
                    self.skipping = true;
                    self.part.problem(self.index, self.line, format!("bad header: {e}"), "bad header");
                }
            }
            return;
        }
        if self.skipping {
            return; // the records of a refused header are counted under that header's problem
        }
        if self.parser.is_none() {
            let format = self.options.log_format.clone().unwrap_or_else(LogFormat::default_v2);
            self.set_format(&format);
        }
        let Some((parser, kind)) = self.parser.as_mut() else {
            return;
        };
        let kind = *kind;
        let mut record = Record::default();
        match parser.parse_into(line, &mut record) {
            Ok(shape) => self.part.ingest(self.inventory, self.index, &record, shape, kind),
            Err(e) => self.part.problem(self.index, self.line, format!("malformed record: {e}"), "malformed record"),
        }
    }

    pub(crate) fn set_format(&mut self, format: &LogFormat) {
        self.skipping = false;
        let acc = self.part.input_mut(self.index);
        acc.formats.insert(format.to_log_format());
        acc.kinds.insert(format.kind());
        self.part.unknown_fields.extend(format.unknown_fields().iter().cloned());
        self.parser = Some((
            LineParser::new(format),
            FormatFacts { kind: format.kind(), has_instance_id: format.has(Field::InstanceId) },
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_layouts() {
        let default = parse_s3_key(
            "bucket/prefix/AWSLogs/123456789012/vpcflowlogs/us-east-1/2018/06/20/123456789012_vpcflowlogs_us-east-1_fl-1234abcd_20180620T1620Z_fe123456.log.gz",
        )
        .unwrap();
        assert_eq!(default.layout, "default");
        assert_eq!(default.account_id, "123456789012");
        assert_eq!(default.region, "us-east-1");
        assert_eq!(default.date, "2018-06-20");
        assert_eq!(default.flow_log_id.as_deref(), Some("fl-1234abcd"));
        assert_eq!(default.file_window.as_deref(), Some("20180620T1620Z"));

        let hourly = parse_s3_key("b/AWSLogs/012345678901/vpcflowlogs/eu-west-1/2024/01/02/13/x.log.gz").unwrap();
        assert_eq!(hourly.layout, "hourly");
        assert_eq!(hourly.account_id, "012345678901", "leading zeros kept");
        assert_eq!(hourly.hour.as_deref(), Some("13"));

        let hive = parse_s3_key(
            "b/AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=us-east-1/year=2024/month=01/day=02/f.log.gz",
        )
        .unwrap();
        assert_eq!(hive.layout, "hive");
        assert_eq!(hive.date, "2024-01-02");

        let hive_hourly = parse_s3_key(
            "b/AWSLogs/aws-account-id=1/service=vpcflowlogs/aws-region=us-east-1/year=2024/month=01/day=02/hour=07/f.log.gz",
        )
        .unwrap();
        assert_eq!(hive_hourly.layout, "hive-hourly");
        assert_eq!(hive_hourly.hour.as_deref(), Some("07"));

        assert_eq!(parse_s3_key("some/other/path.log"), None);
        assert_eq!(parse_s3_key("AWSLogs/1/cloudtrail/us-east-1/2024/01/02/x.json.gz"), None);
    }
}
