//! Reading a log back: every line's place in the chain, every checkpoint's signature. The report
//! says where the chain breaks and what that means (a line modified, lines removed, inserted or
//! reordered, a forged checkpoint, an incomplete last line).

use std::fs::File;
use std::io::{BufRead, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::chain::{GENESIS, check_signature, checkpoint_message, line_hash};
use crate::writer::{file_name, first_seq, same_file};

/// One place where the log is not what was written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The file, for a log in segments (see [`verify_log`]).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub file: String,
    /// Line number in the file (1-based).
    pub line: u64,
    /// What is wrong there.
    pub what: String,
}

/// What verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Decision records read.
    pub records: u64,
    /// Checkpoints whose signature verified.
    pub checkpoints: u64,
    /// Sequence number of the last good checkpoint.
    pub last_checkpoint: Option<u64>,
    /// Records after the last checkpoint (not yet covered by a signature).
    pub unsigned_tail: u64,
    /// Problems, in file order (at most 100 listed).
    pub problems: Vec<Problem>,
    /// Problems in all.
    pub problem_count: u64,
    /// The first line's sequence number: above 1 when older segments were removed (shipped
    /// elsewhere, say); what came before is not checked here.
    pub first_seq: u64,
    /// The files read, oldest first.
    pub files: Vec<String>,
}

impl Report {
    /// Whether the log is intact.
    pub fn is_intact(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, file: &str, line: u64, what: String) {
        self.problem_count += 1;
        if self.problems.len() < 100 {
            self.problems.push(Problem { file: file.to_owned(), line, what });
        }
    }
}

/// The files of the log at `log`, oldest first: its closed segments (`<log>.<first seq>`, in
/// the chain's order), then the log itself. A segment that is the log itself (a rollover cut
/// short) is left out. See [`open_segments`].
pub fn segments(log: &Path) -> std::io::Result<Vec<PathBuf>> {
    Ok(open_segments(log)?.into_iter().map(|segment| segment.path).collect())
}

/// One file of a log, and as much of it as belongs to the snapshot.
#[derive(Debug)]
pub struct Segment {
    /// Its path.
    pub path: PathBuf,
    /// The live file, opened already and cut to the snapshot; a closed segment (which never
    /// changes) is opened when it is read, so a long log holds no descriptor per segment.
    live: Option<std::io::Take<File>>,
}

impl Segment {
    /// What to read of it: all of a closed segment; of the live file, up to where the writers
    /// had got when the snapshot was taken.
    pub fn open(self) -> std::io::Result<std::io::Take<File>> {
        match self.live {
            Some(live) => Ok(live),
            None => Ok(File::open(&self.path)?.take(u64::MAX)),
        }
    }
}

/// Opens the log's files, oldest first, as one snapshot of the chain while writers go on:
/// - the live file first, so that a rollover while the rest are listed and opened neither
///   leaves the segment it becomes out nor reads it twice (it is the same file);
/// - its length taken under a shared lock (writers append a batch under an exclusive one), so
///   that a batch in the middle of being written is not read as a cut-off line;
/// - then the closed segments older than it; newer ones (the log rolled over again meanwhile)
///   are not part of the snapshot.
pub fn open_segments(log: &Path) -> std::io::Result<Vec<Segment>> {
    let mut live = File::open(log)?;
    live.lock_shared()?;
    let live_meta = live.metadata();
    let _ = live.unlock();
    let live_meta = live_meta?;
    let live_first = if live_meta.len() == 0 {
        None
    } else {
        Some(first_seq(&mut live, log).map_err(|e| std::io::Error::other(e.to_string()))?)
    };
    live.seek(SeekFrom::Start(0))?;
    let dir = log.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let prefix = format!("{}.", file_name(log));
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(first) = name.strip_prefix(&prefix).filter(|n| n.len() == 20).and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if live_first.is_some_and(|live_first| first >= live_first) {
            continue;
        }
        let path = entry.path();
        if std::fs::metadata(&path).is_ok_and(|this| same_file(&this, &live_meta)) {
            continue;
        }
        found.push((first, Segment { path, live: None }));
    }
    found.sort_by_key(|(first, _)| *first);
    let mut files: Vec<Segment> = found.into_iter().map(|(_, segment)| segment).collect();
    files.push(Segment { path: log.to_owned(), live: Some(live.take(live_meta.len())) });
    Ok(files)
}

/// Verifies a log on disk with all its segments ([`segments`]), as one chain: each segment
/// ends with a signed checkpoint and the next opens with one that continues the chain. A log
/// whose oldest segments were removed verifies from the first one left, which opens with a
/// signed checkpoint; [`Report::first_seq`] says where that is.
pub fn verify_log(log: &Path, public_key_b64: &str) -> std::io::Result<Report> {
    let mut chain = Chain::new(public_key_b64);
    for segment in open_segments(log)? {
        let name = file_name(&segment.path);
        chain.report.files.push(name.clone());
        chain.read(std::io::BufReader::new(segment.open()?), &name)?;
    }
    Ok(chain.report)
}

/// Verifies the log read from `input` with the checkpoint public key (base64 Ed25519).
pub fn verify(input: impl BufRead, public_key_b64: &str) -> std::io::Result<Report> {
    let mut chain = Chain::new(public_key_b64);
    chain.read(input, "")?;
    Ok(chain.report)
}

/// The chain as read so far, across files.
struct Chain<'k> {
    key: &'k str,
    report: Report,
    prev: String,
    last_seq: u64,
    lines: u64,
}

impl<'k> Chain<'k> {
    fn new(key: &'k str) -> Self {
        Self { key, report: Report::default(), prev: GENESIS.to_owned(), last_seq: 0, lines: 0 }
    }

    fn read(&mut self, mut input: impl BufRead, file: &str) -> std::io::Result<()> {
        let report = &mut self.report;
        let mut number = 0u64;
        let mut line = Vec::new();
        loop {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            number += 1;
            self.lines += 1;
            let complete = line.last() == Some(&b'\n');
            let text = if complete { line.get(..line.len() - 1).unwrap_or_default() } else { &line[..] };
            if !complete {
                report.problem(file, number, "the last line is incomplete (cut off)".into());
            }
            let hash = line_hash(text);
            let value: serde_json::Value = match serde_json::from_slice(text) {
                Ok(v) => v,
                Err(e) => {
                    report.problem(file, number, format!("not a log line ({e}): inserted or damaged"));
                    self.prev = hash;
                    continue;
                }
            };
            let seq = value.get("seq").and_then(serde_json::Value::as_u64);
            let line_prev = value.get("prev").and_then(serde_json::Value::as_str);
            let kind = value.get("kind").and_then(serde_json::Value::as_str);
            let signed = kind == Some("checkpoint") && {
                let at_ms = value.get("at_ms").and_then(serde_json::Value::as_i64);
                let signature = value.get("signature").and_then(serde_json::Value::as_str);
                match (seq, line_prev, at_ms, signature) {
                    (Some(seq), Some(head), Some(at_ms), Some(signature)) => {
                        check_signature(self.key, &checkpoint_message(seq, head, at_ms), signature)
                    }
                    _ => false,
                }
            };
            // The first line of all may open a segment whose predecessors are gone: a signed
            // checkpoint there is where the chain read here begins.
            let starts_later = self.lines == 1 && signed && seq.is_some_and(|seq| seq > 1);
            if self.lines == 1 {
                report.first_seq = seq.unwrap_or(0);
            }
            if starts_later {
                self.last_seq = seq.unwrap_or(1) - 1;
            }
            let last_seq = self.last_seq;
            match seq {
                None => report.problem(file, number, "no sequence number: inserted or damaged".into()),
                Some(seq) if seq == last_seq + 1 => {}
                Some(seq) if seq > last_seq + 1 => report.problem(
                    file,
                    number,
                    format!(
                        "sequence jumps from {last_seq} to {seq}: {} line(s) removed before this one",
                        seq - last_seq - 1
                    ),
                ),
                Some(seq) => report.problem(
                    file,
                    number,
                    format!("sequence goes from {last_seq} back to {seq}: lines reordered or inserted"),
                ),
            }
            let seq_continues = seq == Some(last_seq + 1);
            if !starts_later && line_prev != Some(self.prev.as_str()) {
                let what = if seq_continues && number > 1 {
                    format!("does not follow line {}: that line was modified", number - 1)
                } else if seq_continues && self.lines > 1 {
                    "does not follow the last line of the file before: a segment was modified or replaced".to_owned()
                } else {
                    "does not follow the line before it: lines removed, inserted or reordered here".to_owned()
                };
                report.problem(file, number, what);
            }
            match kind {
                Some("decision") => {
                    report.records += 1;
                    report.unsigned_tail += 1;
                }
                Some("checkpoint") if signed => {
                    report.checkpoints += 1;
                    report.last_checkpoint = seq;
                    report.unsigned_tail = 0;
                }
                Some("checkpoint") => {
                    report.problem(file, number, "checkpoint signature does not verify: forged or modified".into());
                }
                _ => report.problem(file, number, "unknown kind of line: inserted or damaged".into()),
            }
            if let Some(seq) = seq {
                self.last_seq = seq;
            }
            self.prev = hash;
        }
        Ok(())
    }
}
