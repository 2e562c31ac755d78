//! The file and stdout sinks.
//!
//! The file sink's worker hands a batch of events to a blocking thread
//! (`spawn_blocking`) that formats and writes it, 32 KB at a time. In `sync` mode it
//! fsyncs every batch before the acknowledgements go out. In group mode a batch gathers
//! events for up to [`LINGER`], and an fsync follows at most `commit_interval` after
//! the worker took the first event not yet on disk (plus one batch's write, or the end
//! of an fsync still running), however steadily events keep arriving: a power loss
//! loses at most that window and the fsync's own time, a killed process the events
//! still gathering. The fsync runs on its own blocking task while batches go on being
//! written: an fsync can take seconds on a busy disk (ext4 commits every file's dirty
//! data with its journal), and a killed process loses what it had not written, not
//! what it had not fsynced. Rotation (by size at line boundaries, or by age) renames
//! the file with a UTC timestamp and gzips it on a background thread. It is put off
//! while an fsync runs (the file may pass its size by what is written meanwhile), and
//! its own fsync holds the writes.
//!
//! A failing disk: a write that fails part-way is cut back to the last whole line;
//! after a failed fsync (whose lost pages the kernel marks clean, so that the next
//! fsync would succeed over them) the file is cut back to its last good fsync and what
//! followed is written again, from memory, before the next fsync (see [`FileWriter`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinError, JoinHandle};
use tokio::time::sleep_until;

use crate::config::{Durability, FilePlan};
use crate::error::Error;
use crate::format::{Format, write_event};
use crate::pipeline::{Counters, Item};

/// Events taken from the queue per batch.
pub(crate) const BATCH: usize = 4096;

/// The open audit file, its rotation state, and what it has written since its last
/// good fsync.
pub(crate) struct FileWriter {
    path: PathBuf,
    file: File,
    size: u64,
    opened: Instant,
    rotate_size: Option<u64>,
    rotate_interval: Option<Duration>,
    compress: bool,
    keep: Option<usize>,
    /// The file's size at its last successful fsync.
    synced: u64,
    /// Every byte written since then (the file from `synced` on), and its lines. An
    /// fsync that fails may have lost them: the kernel reports a failed writeback to
    /// one fsync and marks the pages clean, so the next fsync says "done" over what
    /// never reached the disk. They are kept to be written again.
    unsynced: Vec<u8>,
    unsynced_lines: u64,
    /// An fsync failed: the next one first cuts the file back to `synced` and writes
    /// `unsynced` again.
    rewrite: bool,
    /// Whether the path is a regular file. A FIFO or a device (a log shipper's pipe,
    /// `/dev/full`) cannot be cut back or written again, and keeps nothing.
    regular: bool,
    /// Group mode: a failed fsync is retried with what it lost written again. In
    /// `sync` mode the batch's responses are refused instead (503), so its events are
    /// cut off the file rather than kept to reach the disk later.
    retry: bool,
    /// Lines counted as written and then cut off the file (a `sync`-mode batch whose
    /// fsync failed), for the worker to count as dropped instead.
    taken_back: u64,
    /// An fsync runs without the lock ([`FileWriter::begin_sync`]): until it ends the
    /// file is only appended to (no rotation, no cut-back below where the fsync
    /// began), so that what it covers is still the front of `unsynced`.
    syncing: bool,
    /// How the file's data is fsynced: `File::sync_data`, or a test's stand-in (a disk
    /// whose fsync takes as long as the test wants).
    fsync: Fsyncer,
}

/// Fsyncs a file's data.
pub(crate) type Fsyncer = Arc<dyn Fn(&File) -> io::Result<()> + Send + Sync>;

/// Where an fsync started: the file's size, and how much of `unsynced` it covers.
pub(crate) struct SyncMark {
    size: u64,
    bytes: usize,
    lines: u64,
}

/// The longest a file sink waits between fsync retries while they keep failing (the
/// wait doubles from `commit_interval` up to this, or up to `commit_interval` if that
/// is longer).
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The most a file sink keeps of what it has not fsynced (fsyncs fail, or one is very
/// slow). Past it, the sink takes no more events until an fsync succeeds: the queue
/// fills, and its `queue_full` policy (block or drop, counted) applies.
const UNSYNCED_MAX: usize = 32 << 20;

fn io_err(path: &Path, source: io::Error) -> Error {
    Error::Io {
        what: "audit file",
        path: path.to_path_buf(),
        source,
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => File::open(d)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

impl FileWriter {
    /// Opens (creating the directory and file if needed) the sink's file for appending.
    pub fn open(plan: &FilePlan) -> Result<FileWriter, Error> {
        if let Some(dir) = plan.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        }
        let file = open_append(&plan.path).map_err(|e| io_err(&plan.path, e))?;
        let meta = file.metadata().map_err(|e| io_err(&plan.path, e))?;
        let size = meta.len();
        Ok(FileWriter {
            path: plan.path.clone(),
            file,
            size,
            opened: Instant::now(),
            rotate_size: plan.rotate_size,
            rotate_interval: plan.rotate_interval,
            compress: plan.compress,
            keep: plan.keep,
            synced: size,
            unsynced: Vec::new(),
            unsynced_lines: 0,
            rewrite: false,
            regular: meta.is_file(),
            retry: plan.durability == Durability::Group,
            taken_back: 0,
            syncing: false,
            fsync: Arc::new(File::sync_data),
        })
    }

    /// Writes `buf`, whose lines end at `ends`, rotating between lines when the size
    /// limit would be passed or the file is too old. Returns how many lines reached
    /// the file, and the first error.
    fn write_lines(&mut self, buf: &[u8], ends: &[usize]) -> (usize, io::Result<()>) {
        // While fsyncs fail the file is not rotated (a rotation needs one): events go on
        // into it, kept, under the bound and the retries' back-off.
        if let Some(max) = self.rotate_interval
            && self.opened.elapsed() >= max
            && self.size > 0
            && !self.rewrite
            && !self.syncing
            && let Err(e) = self.rotate()
        {
            return (0, Err(e));
        }
        let Some(limit) = self.rotate_size else {
            return match self.append(buf, ends.len()) {
                Ok(()) => (ends.len(), Ok(())),
                Err(e) => (0, Err(e)),
            };
        };
        // Lines written, lines pending, the start of the pending ones.
        let (mut done, mut lines, mut start, mut chunk_end) = (0, 0, 0, 0);
        for &end in ends {
            let line = (end - chunk_end) as u64;
            let pending = (chunk_end - start) as u64;
            if self.size + pending + line > limit
                && self.size + pending > 0
                && !self.rewrite
                && !self.syncing
            {
                if let Err(e) = self.append(&buf[start..chunk_end], lines) {
                    return (done, Err(e));
                }
                done += lines;
                (lines, start) = (0, chunk_end);
                if let Err(e) = self.rotate() {
                    return (done, Err(e));
                }
            }
            chunk_end = end;
            lines += 1;
        }
        match self.append(&buf[start..chunk_end], lines) {
            Ok(()) => (done + lines, Ok(())),
            Err(e) => (done, Err(e)),
        }
    }

    /// Appends `lines` whole lines. A write that fails part-way (a full disk) would
    /// leave part of a line, to which the next write would glue its first: the file is
    /// cut back to its last whole line (unless an fsync failed, when the next fsync
    /// rewrites from `synced` anyway).
    fn append(&mut self, bytes: &[u8], lines: usize) -> io::Result<()> {
        if let Err(e) = self.file.write_all(bytes) {
            if self.regular && !self.rewrite {
                // Best effort: if this fails too, the error above is what is reported.
                let _ = self.file.set_len(self.size);
            }
            return Err(e);
        }
        self.size += bytes.len() as u64;
        if self.regular {
            self.unsynced.extend_from_slice(bytes);
            self.unsynced_lines += lines as u64;
        }
        Ok(())
    }

    /// Fsyncs the file's data, holding the writer. After a failed fsync, first writes
    /// again what was not fsynced, from where the last good fsync left the file.
    fn sync(&mut self) -> io::Result<()> {
        let mark = self.begin_sync()?;
        let r = (self.fsync)(&self.file);
        self.finish_sync(mark, r)
    }

    /// Readies an fsync of what the file holds now (after a failed one, first writing
    /// again what it lost). The fsync itself may then run without the writer's lock,
    /// on a clone of the file, while events go on being appended; [`finish_sync`]
    /// (which must follow) takes its result.
    ///
    /// [`finish_sync`]: FileWriter::finish_sync
    fn begin_sync(&mut self) -> io::Result<SyncMark> {
        debug_assert!(!self.syncing, "one fsync at a time");
        if self.rewrite {
            self.file.set_len(self.synced)?;
            self.size = self.synced;
            if let Err(e) = self.file.write_all(&self.unsynced) {
                // No half line left behind, even if this is the last try.
                let _ = self.file.set_len(self.synced);
                return Err(e);
            }
            self.size += self.unsynced.len() as u64;
            self.rewrite = false;
        }
        self.syncing = true;
        Ok(SyncMark {
            size: self.size,
            bytes: self.unsynced.len(),
            lines: self.unsynced_lines,
        })
    }

    /// Takes the result of the fsync [`FileWriter::begin_sync`] readied: what it covered
    /// is on disk, or (group mode) to be written again before the next one, or
    /// (`sync` mode) cut off.
    fn finish_sync(&mut self, mark: SyncMark, r: io::Result<()>) -> io::Result<()> {
        self.syncing = false;
        if let Err(e) = r {
            if self.retry {
                self.rewrite = self.regular;
            } else {
                self.drop_unsynced();
            }
            return Err(e);
        }
        // Since `begin_sync` the file was only appended to: the mark is still the
        // front of what is kept.
        debug_assert!(mark.size >= self.synced && mark.bytes <= self.unsynced.len());
        self.synced = mark.size;
        self.unsynced.drain(..mark.bytes.min(self.unsynced.len()));
        self.unsynced_lines = self.unsynced_lines.saturating_sub(mark.lines);
        Ok(())
    }

    /// The fsync task ended without a result (it panicked): the fsync counts as
    /// failed.
    fn abandon_sync(&mut self) {
        if self.syncing {
            self.syncing = false;
            self.rewrite = self.retry && self.regular;
        }
    }

    /// Cuts the file back to its last good fsync (best effort: the events are counted
    /// as dropped either way) and forgets what followed.
    fn drop_unsynced(&mut self) {
        if self.regular && self.file.set_len(self.synced).is_ok() {
            self.size = self.synced;
        }
        self.taken_back += self.unsynced_lines;
        self.unsynced.clear();
        self.unsynced_lines = 0;
    }

    /// The lines cut off the file since the last call.
    fn take_back(&mut self) -> u64 {
        std::mem::take(&mut self.taken_back)
    }

    /// Whether the sink keeps as much as it may of what is not fsynced yet (fsyncs
    /// fail, or one is very slow).
    fn backlogged(&self) -> bool {
        self.unsynced.len() >= UNSYNCED_MAX
    }

    /// Renames the current file to `NAME.<UTC timestamp>`, opens a fresh one and
    /// starts compressing and pruning the old ones in the background.
    fn rotate(&mut self) -> io::Result<()> {
        // Not before what the file holds is on disk (written again if an fsync failed).
        self.sync()?;
        let mut stamp = Vec::new();
        crate::timefmt::write_rfc3339(SystemTime::now(), &mut stamp);
        let stamp: String = String::from_utf8_lossy(&stamp)
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut rotated = self.path.with_file_name(format!("{name}.{stamp}"));
        let mut n = 1;
        while rotated.exists() || rotated.with_extension_gz().exists() {
            rotated = self.path.with_file_name(format!("{name}.{stamp}-{n}"));
            n += 1;
        }
        std::fs::rename(&self.path, &rotated)?;
        self.file = open_append(&self.path)?;
        (self.size, self.synced, self.opened) = (0, 0, Instant::now());
        self.regular = self.file.metadata()?.is_file();
        sync_dir(&self.path)?;
        let (compress, keep, path) = (self.compress, self.keep, self.path.clone());
        std::thread::spawn(move || {
            if compress && let Err(e) = gzip_file(&rotated) {
                tracing::error!(file = %rotated.display(), error = %e, "gzip of rotated audit file failed");
            }
            if let Some(keep) = keep
                && let Err(e) = prune(&path, keep)
            {
                tracing::error!(file = %path.display(), error = %e, "pruning rotated audit files failed");
            }
        });
        Ok(())
    }
}

trait GzName {
    fn with_extension_gz(&self) -> PathBuf;
}

impl GzName for Path {
    fn with_extension_gz(&self) -> PathBuf {
        let mut s = self.as_os_str().to_owned();
        s.push(".gz");
        PathBuf::from(s)
    }
}

/// Compresses `path` to `path.gz` (written to a temporary name, fsynced, renamed),
/// then removes `path`.
fn gzip_file(path: &Path) -> io::Result<()> {
    let gz = path.with_extension_gz();
    let mut tmp = gz.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut input = File::open(path)?;
    let out = File::create(&tmp)?;
    // Level 1: a little less compression than the default level for several times its
    // speed (the gzip runs in the gateway's process, beside its traffic).
    let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    io::copy(&mut input, &mut enc)?;
    let out = enc.finish()?;
    out.sync_all()?;
    std::fs::rename(&tmp, &gz)?;
    std::fs::remove_file(path)?;
    sync_dir(&gz)
}

/// Keeps the `keep` newest rotated files of `path` (compressed or not).
fn prune(path: &Path, keep: usize) -> io::Result<()> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(
        "{}.",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    let mut stamps: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix(&prefix)
            && !rest.ends_with(".tmp")
        {
            let stamp = rest.strip_suffix(".gz").unwrap_or(rest).to_string();
            if !stamps.contains(&stamp) {
                stamps.push(stamp);
            }
        }
    }
    stamps.sort();
    let excess = stamps.len().saturating_sub(keep);
    for stamp in &stamps[..excess] {
        for suffix in ["", ".gz"] {
            let p = dir.join(format!("{prefix}{stamp}{suffix}"));
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn lock(w: &Mutex<FileWriter>) -> MutexGuard<'_, FileWriter> {
    // A panic while holding the lock cannot leave the writer half-updated in a way
    // that matters: the next write appends after whatever reached the file.
    w.lock().unwrap_or_else(|p| p.into_inner())
}

/// What [`next`] found.
enum Next {
    Batch,
    Commit,
    /// The fsync in flight ended (the caller clears it).
    Synced(Result<io::Result<()>, JoinError>),
    Stop,
}

/// An fsync running on the blocking pool while the sink goes on writing.
type Fsync = JoinHandle<io::Result<()>>;

/// Waits for the next batch (if `take`), a commit deadline, the end of the fsync in
/// flight or shutdown. A deadline that has come goes before a waiting batch, so that
/// steady traffic cannot put an fsync off.
async fn next(
    rx: &mut mpsc::Receiver<Item>,
    items: &mut Vec<Item>,
    stop: &mut watch::Receiver<bool>,
    stopping: &mut bool,
    deadline: Option<tokio::time::Instant>,
    take: bool,
    fsync: &mut Option<Fsync>,
) -> Next {
    if *stopping {
        return if rx.recv_many(items, BATCH).await == 0 {
            Next::Stop
        } else {
            Next::Batch
        };
    }
    tokio::select! {
        biased;
        r = stop.changed() => {
            if r.is_err() || *stop.borrow() {
                *stopping = true;
                rx.close();
            }
            if rx.recv_many(items, BATCH).await == 0 { Next::Stop } else { Next::Batch }
        }
        _ = async {
            match deadline {
                Some(d) => sleep_until(d).await,
                None => std::future::pending().await,
            }
        } => Next::Commit,
        r = async {
            match fsync.as_mut() {
                Some(f) => f.await,
                None => std::future::pending().await,
            }
        } => Next::Synced(r),
        n = rx.recv_many(items, BATCH), if take => if n == 0 { Next::Stop } else { Next::Batch },
    }
}

/// [`next`] for a sink with no commit deadline and no fsync: whether a batch came
/// (else the sink stops).
pub(crate) async fn next_batch(
    rx: &mut mpsc::Receiver<Item>,
    items: &mut Vec<Item>,
    stop: &mut watch::Receiver<bool>,
    stopping: &mut bool,
) -> bool {
    loop {
        match next(rx, items, stop, stopping, None, true, &mut None).await {
            Next::Batch => return true,
            Next::Stop => return false,
            Next::Commit | Next::Synced(_) => {}
        }
    }
}

/// The longest a group-commit batch gathers events before it is written (or the
/// commit interval, if shorter). Each batch costs a hand-off to the blocking pool, a
/// thread wake-up and a cold start of the writer, about 100 us on the benchmark
/// machine (inferred from these figures): the file sink's thread spent a median 3.0 us per event gathering for 5 ms,
/// 2.15 us for 25 ms and 2.0 us for 100 ms (`bench/thread-cpu.sh`; README, "The audit
/// log's cost"). A process killed outright loses the events still gathering.
const LINGER: Duration = Duration::from_millis(25);

/// How often a gathering batch looks at its queue: it stops gathering early once a
/// full batch, or half the queue, is waiting, so that a small queue does not fill up
/// (and block or drop) while the batch sleeps.
const LINGER_TICK: Duration = Duration::from_millis(5);

/// Adds to `items` what arrives until `until`, up to a full batch. It sleeps and then
/// takes what is queued, so that a burst of events wakes the worker a few times rather
/// than once per event. Returns whether shutdown was asked for meanwhile.
async fn linger(
    rx: &mut mpsc::Receiver<Item>,
    items: &mut Vec<Item>,
    until: tokio::time::Instant,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let enough = BATCH.min(rx.max_capacity() / 2).max(1);
    let mut stopped = false;
    while items.len() + rx.len() < enough {
        let now = tokio::time::Instant::now();
        if now >= until {
            break;
        }
        stopped = tokio::select! {
            _ = sleep_until(until.min(now + LINGER_TICK)) => false,
            r = stop.changed() => r.is_err() || *stop.borrow(),
        };
        if stopped {
            break;
        }
    }
    while items.len() < BATCH {
        match rx.try_recv() {
            Ok(item) => items.push(item),
            Err(_) => break,
        }
    }
    stopped
}

/// The most formatted text written at once. A batch (up to [`BATCH`] events, megabytes
/// of text) is formatted and written a chunk at a time, so the buffer stays this small
/// and is reused while still in cache. The benchmark showed no change in total CPU from
/// it (README, "The audit log's cost"); it bounds the sink's memory.
const CHUNK: usize = 32 << 10;

/// Formats `items` into `buf` and writes them, a chunk at a time, then fsyncs if
/// `sync` (`sync` mode, where a batch that fails is cut off the file). Returns how many
/// events were written (handed to the OS), whether they were fsynced (`None`: not
/// asked, or the write failed), and the first error.
fn write_batch(
    writer: &Mutex<FileWriter>,
    format: Format,
    items: &[Item],
    buf: &mut Vec<u8>,
    ends: &mut Vec<usize>,
    sync: bool,
) -> (u64, Option<bool>, io::Result<()>) {
    let mut w = lock(writer);
    let mut written = 0;
    let mut rest = items;
    while !rest.is_empty() {
        buf.clear();
        ends.clear();
        let mut n = 0;
        for item in rest {
            write_event(format, &item.event, buf);
            buf.push(b'\n');
            ends.push(buf.len());
            n += 1;
            if buf.len() >= CHUNK {
                break;
            }
        }
        rest = &rest[n..];
        let (lines, r) = w.write_lines(buf, ends);
        written += lines as u64;
        if let Err(e) = r {
            if sync {
                // The batch's responses are refused: what of it reached the file (not
                // yet fsynced) is cut off, not left to reach the disk with the next.
                w.drop_unsynced();
            }
            return (written, None, Err(e));
        }
    }
    if !sync {
        return (written, None, Ok(()));
    }
    match w.sync() {
        Ok(()) => (written, Some(true), Ok(())),
        Err(e) => (written, Some(false), Err(e)),
    }
}

/// Starts an fsync of what the file holds on the blocking pool. It holds the writer
/// only to begin and to end: batches go on being written meanwhile.
fn start_fsync(writer: &Arc<Mutex<FileWriter>>) -> Fsync {
    let w = writer.clone();
    tokio::task::spawn_blocking(move || {
        let (mark, file, fsync) = {
            let mut g = lock(&w);
            let mark = g.begin_sync()?;
            match g.file.try_clone() {
                Ok(f) => (mark, f, g.fsync.clone()),
                Err(_) => {
                    // No descriptor to spare: this once, under the lock.
                    let r = (g.fsync)(&g.file);
                    return g.finish_sync(mark, r);
                }
            }
        };
        let r = fsync(&file);
        lock(&w).finish_sync(mark, r)
    })
}

/// The result of an fsync task; one that ended without one (it panicked) failed.
fn joined(r: Result<io::Result<()>, JoinError>, writer: &Mutex<FileWriter>) -> io::Result<()> {
    r.unwrap_or_else(|e| {
        lock(writer).abandon_sync();
        Err(io::Error::other(format!("fsync task failed: {e}")))
    })
}

/// Counts an fsync's result, and logs a failure.
fn count_sync(r: &io::Result<()>, counters: &Counters, path: &Path) -> bool {
    match r {
        Ok(()) => {
            Counters::add(&counters.syncs, 1);
            true
        }
        Err(e) => {
            Counters::add(&counters.errors, 1);
            tracing::error!(file = %path.display(), error = %e, "audit file fsync failed");
            false
        }
    }
}

/// Counts `lines` counted as written as dropped instead: they were cut off the file, or
/// never fsynced by the end.
fn uncount(counters: &Counters, lines: u64) {
    counters
        .written
        .fetch_sub(lines, std::sync::atomic::Ordering::Relaxed);
    Counters::add(&counters.dropped, lines);
}

/// The file sink's worker.
pub(crate) async fn run_file(
    plan: FilePlan,
    writer: FileWriter,
    mut rx: mpsc::Receiver<Item>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let writer = Arc::new(Mutex::new(writer));
    let group = plan.durability == Durability::Group;
    let mut items = Vec::with_capacity(BATCH);
    let mut buf = Vec::with_capacity(1 << 16);
    let mut ends = Vec::with_capacity(BATCH);
    // When what is written and not yet in an fsync must be on disk (group mode).
    let mut deadline: Option<tokio::time::Instant> = None;
    // The fsync in flight, and whether the deadline of what was written during it has
    // come (another fsync follows at once).
    let mut fsync: Option<Fsync> = None;
    let mut resync = false;
    let mut stopping = false;
    // Failed fsyncs in a row: each retry rewrites what was not fsynced (up to
    // `UNSYNCED_MAX`), so a disk that keeps failing is tried less and less often.
    let mut failures = 0u32;
    let retry = |failures: &mut u32| {
        let wait = plan
            .commit_interval
            .saturating_mul(1 << (*failures).min(16));
        *failures += 1;
        tokio::time::Instant::now() + wait.min(RETRY_MAX.max(plan.commit_interval))
    };
    loop {
        // While fsyncs fail and it keeps all it may to write again, the sink takes no
        // more events (the queue's policy applies), but still tries the fsync.
        let take = !lock(&writer).backlogged();
        match next(
            &mut rx,
            &mut items,
            &mut stop,
            &mut stopping,
            deadline,
            take,
            &mut fsync,
        )
        .await
        {
            Next::Stop => break,
            Next::Commit => {
                deadline = None;
                match fsync {
                    Some(_) => resync = true,
                    None => fsync = Some(start_fsync(&writer)),
                }
            }
            Next::Synced(r) => {
                fsync = None;
                if count_sync(&joined(r, &writer), &counters, &plan.path) {
                    failures = 0;
                    if std::mem::take(&mut resync) {
                        fsync = Some(start_fsync(&writer));
                    }
                } else {
                    // Tried again later, with what it lost written again first (and
                    // whatever was written since).
                    (deadline, resync) = (Some(retry(&mut failures)), false);
                }
            }
            Next::Batch => {
                // When this batch's events must be on disk: the pending deadline, or a
                // commit interval from now. `sync` mode: at once.
                let now = tokio::time::Instant::now();
                let due = deadline.unwrap_or(now + plan.commit_interval);
                if group && !stopping {
                    // Group commit: gather what arrives within a moment into one write,
                    // and no later than the fsync deadline.
                    let until = (now + plan.commit_interval.min(LINGER)).min(due);
                    if linger(&mut rx, &mut items, until, &mut stop).await {
                        stopping = true;
                        rx.close();
                    }
                }
                let n = items.len() as u64;
                // Only `sync` sinks get events with acknowledgements.
                let acks: Vec<_> = items.iter_mut().filter_map(|i| i.ack.take()).collect();
                let w = writer.clone();
                let format = plan.format;
                let (batch, mut b, mut e) = (
                    std::mem::take(&mut items),
                    std::mem::take(&mut buf),
                    std::mem::take(&mut ends),
                );
                let r = tokio::task::spawn_blocking(move || {
                    let r = write_batch(&w, format, &batch, &mut b, &mut e, !group);
                    (batch, b, e, r)
                })
                .await;
                let (written, synced, result) = match r {
                    Ok((mut batch, b, e, (written, synced, r))) => {
                        // The events are freed here, on the thread that allocated them.
                        batch.clear();
                        items = batch;
                        buf = b;
                        ends = e;
                        (written, synced, r.map_err(|e| e.to_string()))
                    }
                    Err(e) => (0, None, Err(format!("writer thread failed: {e}"))),
                };
                Counters::add(&counters.written, written);
                // A `sync`-mode batch whose fsync failed was cut off the file (and its
                // responses refused).
                uncount(&counters, lock(&writer).take_back());
                match synced {
                    Some(true) => Counters::add(&counters.syncs, 1),
                    // Counted with the result's error below.
                    Some(false) => {}
                    None if group && written > 0 && !resync => deadline = Some(due),
                    None => {}
                }
                if let Err(e) = &result {
                    Counters::add(&counters.errors, 1);
                    Counters::add(&counters.dropped, n.saturating_sub(written));
                    tracing::error!(file = %plan.path.display(), error = %e, "audit file write failed");
                }
                for a in acks {
                    let _ = a.send(result.clone());
                }
            }
        }
    }
    if let Some(f) = fsync.take() {
        count_sync(&joined(f.await, &writer), &counters, &plan.path);
    }
    let w = writer.clone();
    let last = joined(
        tokio::task::spawn_blocking(move || lock(&w).sync()).await,
        &writer,
    );
    if !count_sync(&last, &counters, &plan.path) {
        // Written, but the fsyncs failed until the end: counted as dropped, since they
        // may not be on disk (group mode keeps them, `sync` mode cut them off).
        let lost = {
            let mut w = lock(&writer);
            w.take_back() + w.unsynced_lines
        };
        uncount(&counters, lost);
        tracing::error!(file = %plan.path.display(), events = lost, "audit events written but never fsynced: they may be lost");
    }
}

/// The stdout sink's worker: one event per line, flushed per batch.
pub(crate) async fn run_stdout(
    format: Format,
    mut rx: mpsc::Receiver<Item>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let mut out = tokio::io::stdout();
    let mut items = Vec::with_capacity(BATCH);
    let mut buf = Vec::with_capacity(1 << 16);
    let mut stopping = false;
    while next_batch(&mut rx, &mut items, &mut stop, &mut stopping).await {
        buf.clear();
        let n = items.len() as u64;
        let mut acks = Vec::new();
        for it in items.drain(..) {
            write_event(format, &it.event, &mut buf);
            buf.push(b'\n');
            acks.extend(it.ack);
        }
        let r = async {
            out.write_all(&buf).await?;
            out.flush().await
        }
        .await;
        match r {
            Ok(()) => Counters::add(&counters.written, n),
            Err(_) => {
                Counters::add(&counters.errors, 1);
                Counters::add(&counters.dropped, n);
            }
        }
        for a in acks {
            let _ = a.send(Ok(()));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{Action, Event, Outcome};
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    fn item() -> Item {
        Item {
            event: Arc::new(Event::new(Action::Reload, Outcome::Success)),
            ack: None,
        }
    }

    fn writer(dir: &Path, rotate_size: Option<u64>) -> FileWriter {
        FileWriter::open(&FilePlan {
            path: dir.join("audit.jsonl"),
            format: Format::Ecs,
            durability: Durability::Group,
            commit_interval: Duration::from_millis(100),
            rotate_size,
            rotate_interval: None,
            compress: false,
            keep: None,
        })
        .unwrap()
    }

    #[test]
    fn what_is_written_during_an_fsync_is_kept_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), Some(8));
        assert_eq!(w.write_lines(b"a\nb\n", &[2, 4]).0, 2);
        let mark = w.begin_sync().unwrap();
        // Appends go on while the fsync runs, and no rotation (over 8 bytes) cuts in.
        assert_eq!(w.write_lines(b"cc\ndd\n", &[3, 6]).0, 2);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        w.finish_sync(mark, Ok(())).unwrap();
        assert!(!w.syncing, "rotation stays off after the fsync");
        assert_eq!(
            (w.synced, w.unsynced.as_slice(), w.unsynced_lines),
            (4, &b"cc\ndd\n"[..], 2)
        );
        // A failed fsync has everything since the last good one written again first.
        let mark = w.begin_sync().unwrap();
        assert_eq!(w.write_lines(b"e\n", &[2]).0, 1);
        assert!(w.finish_sync(mark, Err(io::Error::other("lost"))).is_err());
        assert!(w.rewrite && w.unsynced_lines == 3);
        w.sync().unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("audit.jsonl")).unwrap(),
            b"a\nb\ncc\ndd\ne\n"
        );
        assert_eq!((w.synced, w.unsynced.len()), (12, 0));
    }

    /// Polls `cond` every 5 ms for up to 10 s.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A slow fsync holds no write: while one is held, events go on reaching the file;
    /// one fsync runs at a time; the deadline of what was written meanwhile starts the
    /// next as soon as it ends; shutdown waits for it and fsyncs the rest.
    /// A disk whose fsync is held until the test releases it (or drops `release`):
    /// fsyncs running now, the most at once, and those done.
    struct HeldFsync {
        release: std::sync::mpsc::Sender<()>,
        running: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
        done: Arc<AtomicUsize>,
    }

    fn hold_fsync(w: &mut FileWriter) -> HeldFsync {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Mutex::new(held);
        let h = HeldFsync {
            release,
            running: Arc::default(),
            most: Arc::default(),
            done: Arc::default(),
        };
        let (r, m, d) = (h.running.clone(), h.most.clone(), h.done.clone());
        w.fsync = Arc::new(move |f: &File| {
            m.fetch_max(r.fetch_add(1, SeqCst) + 1, SeqCst);
            let _ = held.lock().unwrap().recv();
            r.fetch_sub(1, SeqCst);
            d.fetch_add(1, SeqCst);
            f.sync_data()
        });
        h
    }

    /// A group-commit sink in `dir` on a held disk, with a commit interval of 20 ms.
    fn held_sink(
        dir: &Path,
    ) -> (
        HeldFsync,
        mpsc::Sender<Item>,
        Arc<Counters>,
        watch::Sender<bool>,
        JoinHandle<()>,
    ) {
        let mut w = writer(dir, None);
        let held = hold_fsync(&mut w);
        let plan = FilePlan {
            path: dir.join("audit.jsonl"),
            format: Format::Ecs,
            durability: Durability::Group,
            commit_interval: Duration::from_millis(20),
            rotate_size: None,
            rotate_interval: None,
            compress: false,
            keep: None,
        };
        let (tx, rx) = mpsc::channel(1024);
        let counters = Arc::new(Counters::default());
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(run_file(plan, w, rx, counters.clone(), stop));
        (held, tx, counters, stop_tx, task)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_fsync_holds_no_write() {
        let dir = tempfile::tempdir().unwrap();
        let (held, tx, counters, stop_tx, task) = held_sink(dir.path());
        let HeldFsync {
            release,
            running,
            most,
            done,
        } = held;
        let lines = || {
            std::fs::read_to_string(dir.path().join("audit.jsonl"))
                .unwrap()
                .lines()
                .count()
        };
        for _ in 0..10 {
            tx.send(item()).await.unwrap();
        }
        until("an fsync held", || running.load(SeqCst) == 1).await;
        for _ in 0..10 {
            tx.send(item()).await.unwrap();
        }
        until("events written during the fsync", || lines() == 20).await;
        assert_eq!(running.load(SeqCst), 1, "the fsync is still held");
        release.send(()).unwrap();
        until("the next fsync, at once", || {
            done.load(SeqCst) == 1 && running.load(SeqCst) == 1
        })
        .await;
        drop(release);
        let _ = stop_tx.send(true);
        task.await.unwrap();
        assert_eq!(most.load(SeqCst), 1, "two fsyncs at once");
        assert_eq!(counters.written.load(SeqCst), 20);
        assert!(counters.syncs.load(SeqCst) >= 3);
        assert_eq!(counters.errors.load(SeqCst), 0);
    }

    /// An fsync that does not end holds the sink at its bound: past 32 MiB not yet
    /// fsynced it takes no more events (the queue fills, and its policy applies), and
    /// once the fsync ends everything is written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_fsync_holds_the_queue_at_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let (held, tx, counters, stop_tx, task) = held_sink(dir.path());
        let big = || {
            let mut e = Event::new(Action::Reload, Outcome::Success);
            e.message = Some("x".repeat(1000).into());
            Item {
                event: Arc::new(e),
                ack: None,
            }
        };
        // Events until the queue stays full for half a second.
        let mut sent = 0u64;
        while tokio::time::timeout(Duration::from_millis(500), tx.send(big()))
            .await
            .is_ok()
        {
            sent += 1;
            assert!(sent < 200_000, "never held");
        }
        let size = std::fs::metadata(dir.path().join("audit.jsonl"))
            .unwrap()
            .len();
        assert!(
            (UNSYNCED_MAX as u64..UNSYNCED_MAX as u64 + (8 << 20)).contains(&size),
            "{size} bytes written while the fsync is held"
        );
        assert_eq!(held.running.load(SeqCst), 1);
        drop(held.release);
        let _ = stop_tx.send(true);
        task.await.unwrap();
        assert_eq!(counters.written.load(SeqCst), sent);
        assert_eq!(counters.dropped.load(SeqCst), 0);
    }

    // Under paused time the clock moves only when every task waits: a batch that
    // sleeps moves it by the time it slept, and one that does not leaves it still.

    #[tokio::test(start_paused = true)]
    async fn a_gathering_batch_stops_early_when_half_the_queue_waits() {
        let (tx, mut rx) = mpsc::channel(8);
        let (_stop, mut stop) = watch::channel(false);
        for _ in 0..4 {
            assert!(tx.try_send(item()).is_ok());
        }
        let start = tokio::time::Instant::now();
        let mut items = Vec::new();
        assert!(!linger(&mut rx, &mut items, start + LINGER, &mut stop).await);
        assert_eq!(items.len(), 4);
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "it slept with half the queue full"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_gathering_batch_waits_its_window_for_a_few_events() {
        let (tx, mut rx) = mpsc::channel(8);
        let (_stop, mut stop) = watch::channel(false);
        assert!(tx.try_send(item()).is_ok());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(tx.try_send(item()).is_ok());
        });
        let start = tokio::time::Instant::now();
        let mut items = Vec::new();
        assert!(!linger(&mut rx, &mut items, start + LINGER, &mut stop).await);
        assert_eq!(items.len(), 2);
        assert_eq!(start.elapsed(), LINGER);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gathering_batch_ends_at_shutdown() {
        let (tx, mut rx) = mpsc::channel(8);
        let (stop_tx, mut stop) = watch::channel(false);
        assert!(tx.try_send(item()).is_ok());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(3)).await;
            let _ = stop_tx.send(true);
        });
        let start = tokio::time::Instant::now();
        let mut items = Vec::new();
        assert!(linger(&mut rx, &mut items, start + LINGER, &mut stop).await);
        assert_eq!(items.len(), 1);
        assert!(start.elapsed() < LINGER, "{:?}", start.elapsed());
    }
}
