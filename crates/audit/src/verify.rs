//! Reading a log back: every line's place in the chain, every checkpoint's signature. The report
//! says where the chain breaks and what that means (a line modified, lines removed, inserted or
//! reordered, a forged checkpoint, an incomplete last line).

use std::io::BufRead;

use crate::chain::{GENESIS, check_signature, checkpoint_message, line_hash};

/// One place where the log is not what was written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
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
}

impl Report {
    /// Whether the log is intact.
    pub fn is_intact(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, line: u64, what: String) {
        self.problem_count += 1;
        if self.problems.len() < 100 {
            self.problems.push(Problem { line, what });
        }
    }
}

/// Verifies the log read from `input` with the checkpoint public key (base64 Ed25519).
pub fn verify(mut input: impl BufRead, public_key_b64: &str) -> std::io::Result<Report> {
    let mut report = Report::default();
    let mut prev = GENESIS.to_owned();
    let mut last_seq = 0u64;
    let mut number = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        number += 1;
        let complete = line.last() == Some(&b'\n');
        let text = if complete { line.get(..line.len() - 1).unwrap_or_default() } else { &line[..] };
        if !complete {
            report.problem(number, "the last line is incomplete (cut off)".into());
        }
        let hash = line_hash(text);
        let value: serde_json::Value = match serde_json::from_slice(text) {
            Ok(v) => v,
            Err(e) => {
                report.problem(number, format!("not a log line ({e}): inserted or damaged"));
                prev = hash;
                continue;
            }
        };
        let seq = value.get("seq").and_then(serde_json::Value::as_u64);
        let line_prev = value.get("prev").and_then(serde_json::Value::as_str);
        match seq {
            None => report.problem(number, "no sequence number: inserted or damaged".into()),
            Some(seq) if seq == last_seq + 1 => {}
            Some(seq) if seq > last_seq + 1 => report.problem(
                number,
                format!(
                    "sequence jumps from {last_seq} to {seq}: {} line(s) removed before this one",
                    seq - last_seq - 1
                ),
            ),
            Some(seq) => report
                .problem(number, format!("sequence goes from {last_seq} back to {seq}: lines reordered or inserted")),
        }
        let seq_continues = seq == Some(last_seq + 1);
        if line_prev != Some(prev.as_str()) {
            let what = if seq_continues && number > 1 {
                format!("does not follow line {}: that line was modified", number - 1)
            } else {
                "does not follow the line before it: lines removed, inserted or reordered here".to_owned()
            };
            report.problem(number, what);
        }
        match value.get("kind").and_then(serde_json::Value::as_str) {
            Some("decision") => {
                report.records += 1;
                report.unsigned_tail += 1;
            }
            Some("checkpoint") => {
                let at_ms = value.get("at_ms").and_then(serde_json::Value::as_i64);
                let signature = value.get("signature").and_then(serde_json::Value::as_str);
                match (seq, line_prev, at_ms, signature) {
                    (Some(seq), Some(head), Some(at_ms), Some(signature))
                        if check_signature(public_key_b64, &checkpoint_message(seq, head, at_ms), signature) =>
                    {
                        report.checkpoints += 1;
                        report.last_checkpoint = Some(seq);
                        report.unsigned_tail = 0;
                    }
                    _ => report.problem(number, "checkpoint signature does not verify: forged or modified".into()),
                }
            }
            _ => report.problem(number, "unknown kind of line: inserted or damaged".into()),
        }
        if let Some(seq) = seq {
            last_seq = seq;
        }
        prev = hash;
    }
    Ok(report)
}
