//! The writer: one thread owns the file; appenders hand it their record and wait for the
//! `fdatasync` that makes it durable. Whatever is queued when the writer wakes is written and
//! synced together (group commit), so many concurrent appends cost one sync. Past
//! `Options::segment_bytes` the file rolls over into a closed segment and a new live file, under
//! the same lock, so that the log's name always names a whole file that continues the chain.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use crate::chain::{CheckpointKey, GENESIS, checkpoint_message, line_hash};
use crate::record::DecisionRecord;

/// Why an append (or opening the log) failed. An append that fails was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// The file could not be opened, written or synced.
    #[error("audit log `{path}`: {reason}")]
    Io {
        /// The log.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The last line of an existing log is not a record this version can continue from.
    #[error("audit log `{path}`: cannot continue after line {line}: {reason}")]
    Corrupt {
        /// The log.
        path: PathBuf,
        /// The line.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The log was closed.
    #[error("the audit log is closed")]
    Closed,
}

/// Where a record landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Its sequence number (line number in the log).
    pub seq: u64,
    /// SHA-256 of its line.
    pub hash: String,
}

/// Tuning.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// A signed checkpoint after this many records (and when the log closes).
    pub checkpoint_every: u64,
    /// Most records written by one sync.
    pub max_batch: usize,
    /// Once the log holds this many bytes it is closed as a segment of its own and a new one
    /// continues the chain (see [`crate::segments`]); `None`: one file forever.
    pub segment_bytes: Option<u64>,
}

/// Where a log rolls over by default: 256 MiB, about half a million gateway records.
pub const DEFAULT_SEGMENT_BYTES: u64 = 256 * 1024 * 1024;

impl Default for Options {
    fn default() -> Self {
        Self { checkpoint_every: 1000, max_batch: 4096, segment_bytes: Some(DEFAULT_SEGMENT_BYTES) }
    }
}

type Reply = Box<dyn FnOnce(Result<Receipt, AuditError>) + Send>;

struct Job {
    body: String,
    reply: Reply,
}

/// An open audit log. Appends from any thread.
pub struct AuditLog {
    path: PathBuf,
    sender: Mutex<Option<SyncSender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("path", &self.path).finish_non_exhaustive()
    }
}

/// The writer's view of the chain.
struct State {
    file: File,
    path: PathBuf,
    seq: u64,
    prev: String,
    len: u64,
    since_checkpoint: u64,
    key: CheckpointKey,
    options: Options,
    /// The length past which the live file rolls over: the segment size, or further on after a
    /// rollover that failed (say, on a file system without hard links), so that a failing one
    /// is not tried (with a checkpoint signed each time) on every batch.
    roll_at: u64,
    /// The length the file is to be cut back to, when cutting off a failed write failed too:
    /// until that cut succeeds nothing is appended, so the failed lines never join the chain.
    uncut: Option<u64>,
    /// A rollover's rename is not known to be durable yet (syncing the directory failed).
    rename_unsynced: bool,
}

/// Makes the entries of `path`'s directory durable (a rename into it).
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        Some(dir) => File::open(dir).and_then(|dir| dir.sync_all()),
        None => Ok(()),
    }
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> AuditError + '_ {
    move |e| AuditError::Io { path: path.to_owned(), reason: e.to_string() }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl AuditLog {
    /// Opens (creating if needed, owner-only) the log at `path` and starts its writer. An
    /// incomplete last line (a crash in the middle of a write that was never acknowledged) is cut
    /// off; a last line that is not a record is refused. The tail is read under the log's lock:
    /// another writer's batch in the middle of its write is not an incomplete line.
    pub fn open(path: &Path, key: CheckpointKey, options: Options) -> Result<Self, AuditError> {
        let mut file = open_for_append(path, false)?;
        lock_named(path, &mut file)?;
        let tail = tail_state(&mut file, path);
        let _ = file.unlock();
        let (seq, prev, len) = tail?;
        let state = State {
            file,
            path: path.to_owned(),
            seq,
            prev,
            len,
            since_checkpoint: 0,
            uncut: None,
            rename_unsynced: false,
            roll_at: options.segment_bytes.unwrap_or(u64::MAX),
            key,
            options: Options {
                max_batch: options.max_batch.max(1),
                checkpoint_every: options.checkpoint_every.max(1),
                segment_bytes: options.segment_bytes.map(|bytes| bytes.max(1)),
            },
        };
        let (sender, receiver) = mpsc::sync_channel::<Job>(64 * 1024);
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || run(state, receiver))
            .map_err(io_error(path))?;
        Ok(Self { path: path.to_owned(), sender: Mutex::new(Some(sender)), writer: Mutex::new(Some(writer)) })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` and calls `done` once it is durable, or with the reason it is not.
    pub fn append_then(
        &self,
        record: &DecisionRecord,
        done: impl FnOnce(Result<Receipt, AuditError>) + Send + 'static,
    ) {
        let sender = self.sender.lock().ok().and_then(|s| s.clone());
        let Some(sender) = sender else {
            done(Err(AuditError::Closed));
            return;
        };
        if let Err(mpsc::SendError(job)) = sender.send(Job { body: record.to_json(), reply: Box::new(done) }) {
            (job.reply)(Err(AuditError::Closed));
        }
    }

    /// Appends `record` and returns once it is durable.
    pub fn append(&self, record: &DecisionRecord) -> Result<Receipt, AuditError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.append_then(record, move |result| {
            let _ = tx.send(result);
        });
        rx.recv().unwrap_or(Err(AuditError::Closed))
    }

    /// Writes a final checkpoint and stops the writer; later appends fail with `Closed`.
    pub fn close(&self) {
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
        if let Some(writer) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = writer.join();
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// Opens `path` to append (owner-only when it is created); with `new`, a file that must not
/// exist yet.
fn open_for_append(path: &Path, new: bool) -> Result<File, AuditError> {
    let mut open = OpenOptions::new();
    open.read(true).append(true);
    if new {
        open.create_new(true);
    } else {
        open.create(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    open.open(path).map_err(io_error(path))
}

/// Whether two open files are one (the same device and inode).
#[cfg(unix)]
pub(crate) fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
pub(crate) fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    true
}

/// Locks `file`, the log at `path`: when the name has moved on to another file (another writer
/// rolled the log over), that one instead, and says so.
fn lock_named(path: &Path, file: &mut File) -> Result<bool, AuditError> {
    let mut moved = false;
    loop {
        file.lock().map_err(io_error(path))?;
        let ours = file.metadata().map_err(io_error(path));
        let named = std::fs::metadata(path).map_err(io_error(path));
        match (ours, named) {
            (Ok(ours), Ok(named)) if same_file(&ours, &named) => return Ok(moved),
            (Ok(_), Ok(_)) => {
                let _ = file.unlock();
                *file = open_for_append(path, false)?;
                moved = true;
            }
            (Err(error), _) | (_, Err(error)) => {
                let _ = file.unlock();
                return Err(error);
            }
        }
    }
}

/// The sequence number of the first line of `file`.
pub(crate) fn first_seq(file: &mut File, path: &Path) -> Result<u64, AuditError> {
    file.seek(SeekFrom::Start(0)).map_err(io_error(path))?;
    let mut head = Vec::new();
    file.take(256 * 1024).read_to_end(&mut head).map_err(io_error(path))?;
    let end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    let corrupt = |reason: &str| AuditError::Corrupt { path: path.to_owned(), line: 1, reason: reason.to_owned() };
    let value: serde_json::Value =
        serde_json::from_slice(head.get(..end).unwrap_or_default()).map_err(|e| corrupt(&format!("not JSON: {e}")))?;
    value.get("seq").and_then(serde_json::Value::as_u64).ok_or_else(|| corrupt("no seq"))
}

/// Reads the end of an existing log: the last record's seq and hash, and the file length after
/// cutting an incomplete last line.
fn tail_state(file: &mut File, path: &Path) -> Result<(u64, String, u64), AuditError> {
    let len = file.seek(SeekFrom::End(0)).map_err(io_error(path))?;
    if len == 0 {
        return Ok((0, GENESIS.to_owned(), 0));
    }
    // The last complete line ends at the last newline; read back far enough to hold it.
    let window = len.min(256 * 1024);
    file.seek(SeekFrom::Start(len - window)).map_err(io_error(path))?;
    let mut tail = Vec::new();
    file.take(window).read_to_end(&mut tail).map_err(io_error(path))?;
    let complete = tail.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let kept = len - window + complete as u64;
    if kept < len {
        // An unacknowledged, partly written line: never synced, never acknowledged.
        file.set_len(kept).map_err(io_error(path))?;
        file.sync_data().map_err(io_error(path))?;
    }
    if kept == 0 {
        return Ok((0, GENESIS.to_owned(), 0));
    }
    let body = tail.get(..complete.saturating_sub(1)).unwrap_or_default();
    let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let last = body.get(start..).unwrap_or_default();
    let corrupt = |reason: &str| AuditError::Corrupt { path: path.to_owned(), line: 0, reason: reason.to_owned() };
    if start == 0 && kept > window {
        return Err(corrupt("the last line is longer than 256 KiB"));
    }
    let value: serde_json::Value = serde_json::from_slice(last).map_err(|e| corrupt(&format!("not JSON: {e}")))?;
    let seq = value.get("seq").and_then(serde_json::Value::as_u64).ok_or_else(|| corrupt("no seq"))?;
    Ok((seq, line_hash(last), kept))
}

fn run(mut state: State, jobs: Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < state.options.max_batch {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let bodies: Vec<&str> = batch.iter().map(|j| j.body.as_str()).collect();
        let result = state.write_batch(&bodies);
        match result {
            Ok(receipts) => {
                for (job, receipt) in batch.into_iter().zip(receipts) {
                    (job.reply)(Ok(receipt));
                }
            }
            Err(e) => {
                for job in batch {
                    (job.reply)(Err(e.clone()));
                }
            }
        }
    }
    // Closing: sign the head, so a verifier knows where the log ended.
    if state.since_checkpoint > 0 {
        let _ = state.checkpoint_now();
    }
}

/// The name a closed segment keeps: `<log>.<its first seq, 20 digits>`, so that names sort in
/// the chain's order.
pub(crate) fn segment_path(log: &Path, first_seq: u64) -> PathBuf {
    log.with_file_name(format!("{}.{first_seq:020}", file_name(log)))
}

pub(crate) fn file_name(path: &Path) -> String {
    path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default()
}

impl State {
    fn record_line(&mut self, body: &str, buf: &mut Vec<u8>) -> Receipt {
        self.seq += 1;
        // Written straight into the batch, then hashed where it lies.
        let start = buf.len();
        let _ = write!(buf, "{{\"seq\":{},\"prev\":\"{}\",\"kind\":\"decision\",\"record\":", self.seq, self.prev);
        buf.extend_from_slice(body.as_bytes());
        buf.push(b'}');
        let hash = line_hash(buf.get(start..).unwrap_or_default());
        buf.push(b'\n');
        self.prev.clear();
        self.prev.push_str(&hash);
        self.since_checkpoint += 1;
        Receipt { seq: self.seq, hash }
    }

    fn checkpoint_line(&mut self, buf: &mut Vec<u8>) {
        self.seq += 1;
        let at_ms = now_ms();
        let signature = self.key.sign(&checkpoint_message(self.seq, &self.prev, at_ms));
        let line = format!(
            "{{\"seq\":{},\"prev\":\"{}\",\"kind\":\"checkpoint\",\"at_ms\":{at_ms},\"signature\":\"{signature}\"}}",
            self.seq, self.prev
        );
        self.prev = line_hash(line.as_bytes());
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.since_checkpoint = 0;
    }

    /// Writes the records (and a checkpoint when due) and syncs; on failure the chain is as it
    /// was and the file is cut back to where it was. Other processes may append to the same log
    /// (the CLI while the server runs): the file is locked for the batch, and the chain is picked
    /// up from the file's end if it grew meanwhile.
    fn write_batch(&mut self, bodies: &[&str]) -> Result<Vec<Receipt>, AuditError> {
        self.lock_current()?;
        let result = self.write_batch_locked(bodies);
        if let (Ok(_), Some(limit)) = (&result, self.options.segment_bytes)
            && self.len >= self.roll_at
        {
            // The records are durable whatever happens here; a rollover that fails is tried
            // again once the file has grown by another eighth of a segment.
            match self.roll_over() {
                Ok(()) => self.roll_at = limit,
                Err(_) => self.roll_at = self.len.saturating_add((limit / 8).max(1)),
            }
        }
        let _ = self.file.unlock();
        result
    }

    /// Locks the log's current file: when another writer has rolled it over since, the new
    /// one, whose tail the next catch-up reads.
    fn lock_current(&mut self) -> Result<(), AuditError> {
        if lock_named(&self.path, &mut self.file)? {
            // Whatever its length, its tail is read before the next line.
            self.len = u64::MAX;
            self.roll_at = self.options.segment_bytes.unwrap_or(u64::MAX);
        }
        Ok(())
    }

    /// Cuts the file back to `len` after a write that failed; if that fails too, nothing more
    /// is appended until it succeeds (see [`State::uncut`]).
    fn cut_back(&mut self, len: u64) {
        if self.file.set_len(len).is_err() {
            self.uncut = Some(len);
        }
    }

    /// Closes this file as a segment (a signed checkpoint last, then a second name
    /// `<log>.<first seq>`), and puts a new file under the log's name that opens with a signed
    /// checkpoint continuing the chain. Under the lock; the log's name always names a whole file.
    fn roll_over(&mut self) -> Result<(), AuditError> {
        let path = self.path.clone();
        // (Named by its first line, read before anything is written.)
        let first = first_seq(&mut self.file, &path)?;
        let saved = (self.seq, self.prev.clone(), self.since_checkpoint);
        let mut closing = Vec::new();
        self.checkpoint_line(&mut closing);
        if let Err(error) = self.file.write_all(&closing).and_then(|()| self.file.sync_data()) {
            (self.seq, self.prev, self.since_checkpoint) = saved;
            self.cut_back(self.len);
            return Err(io_error(&path)(error));
        }
        self.len += closing.len() as u64;
        let segment = segment_path(&path, first);
        match std::fs::hard_link(&path, &segment) {
            Ok(()) => {}
            // A rollover cut short before: the segment is already this file.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                let ours = self.file.metadata().map_err(io_error(&path))?;
                let there = std::fs::metadata(&segment).map_err(io_error(&segment))?;
                if !same_file(&ours, &there) {
                    return Err(AuditError::Io {
                        path: segment,
                        reason: "a different file already has this segment's name".into(),
                    });
                }
            }
            Err(error) => return Err(io_error(&segment)(error)),
        }
        let next_path = path.with_file_name(format!("{}.next", file_name(&path)));
        match std::fs::remove_file(&next_path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io_error(&next_path)(error)),
        }
        let mut next = open_for_append(&next_path, true)?;
        let saved = (self.seq, self.prev.clone(), self.since_checkpoint);
        let mut opening = Vec::new();
        self.checkpoint_line(&mut opening);
        let renamed =
            next.write_all(&opening).and_then(|()| next.sync_data()).and_then(|()| std::fs::rename(&next_path, &path));
        if let Err(error) = renamed {
            (self.seq, self.prev, self.since_checkpoint) = saved;
            let _ = std::fs::remove_file(&next_path);
            return Err(io_error(&path)(error));
        }
        // The rename itself made durable; then the new file is this writer's (the old one's
        // lock goes with its descriptor).
        // Until it is, nothing written to the new file is acknowledged: after a power loss the
        // log's name could still be the old file's.
        self.rename_unsynced = sync_parent(&path).is_err();
        let _ = next.lock();
        self.file = next;
        self.len = opening.len() as u64;
        Ok(())
    }

    fn catch_up(&mut self) -> Result<(), AuditError> {
        let len = self.file.metadata().map_err(io_error(&self.path))?.len();
        if len != self.len {
            let (seq, prev, len) = tail_state(&mut self.file, &self.path)?;
            (self.seq, self.prev, self.len) = (seq, prev, len);
        }
        Ok(())
    }

    fn write_batch_locked(&mut self, bodies: &[&str]) -> Result<Vec<Receipt>, AuditError> {
        if let Some(len) = self.uncut {
            self.file.set_len(len).map_err(|e| AuditError::Io {
                path: self.path.clone(),
                reason: format!("a failed write could not be cut off, so nothing is appended: {e}"),
            })?;
            self.uncut = None;
        }
        if self.rename_unsynced {
            sync_parent(&self.path).map_err(|e| AuditError::Io {
                path: self.path.clone(),
                reason: format!("the rollover's new file is not durable yet: syncing its directory: {e}"),
            })?;
            self.rename_unsynced = false;
        }
        self.catch_up()?;
        let saved = (self.seq, self.prev.clone(), self.since_checkpoint);
        let mut buf = Vec::with_capacity(bodies.iter().map(|b| b.len() + 120).sum());
        let receipts: Vec<Receipt> = bodies.iter().map(|body| self.record_line(body, &mut buf)).collect();
        if self.since_checkpoint >= self.options.checkpoint_every {
            self.checkpoint_line(&mut buf);
        }
        match self.file.write_all(&buf).and_then(|()| self.file.sync_data()) {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(receipts)
            }
            Err(e) => {
                (self.seq, self.prev, self.since_checkpoint) = saved;
                self.cut_back(self.len);
                Err(AuditError::Io { path: self.path.clone(), reason: e.to_string() })
            }
        }
    }

    fn checkpoint_now(&mut self) -> Result<(), AuditError> {
        self.lock_current()?;
        let result = self.catch_up().and_then(|()| {
            let mut buf = Vec::new();
            self.checkpoint_line(&mut buf);
            self.file.write_all(&buf).and_then(|()| self.file.sync_data()).map_err(io_error(&self.path))?;
            self.len += buf.len() as u64;
            Ok(())
        });
        let _ = self.file.unlock();
        result
    }
}
