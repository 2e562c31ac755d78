//! The file sink on disks that fail: a filesystem that fills up in the middle of a
//! batch, and a block device whose writes fail under an fsync (the kernel reports such
//! an error once and marks the lost pages clean, so a later fsync "succeeds"). Both
//! are real: a tmpfs mounted with a small size, and ext4 on a loop device whose
//! backing file lives on a tmpfs that a filler file has filled. Needs root (mount,
//! losetup), like the network-namespace tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{event, ids, start};
use intraport_audit::{Audit, AuditHandle, SinkStats};

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (this test needs root and util-linux)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Mounts made by a test, undone in reverse order when it ends (or panics).
#[derive(Default)]
struct Mounts {
    undo: Vec<(&'static str, PathBuf)>,
}

impl Mounts {
    fn tmpfs(&mut self, at: &Path, size: &str) {
        std::fs::create_dir_all(at).unwrap();
        let opts = format!("size={size}");
        run("mount", &["-t", "tmpfs", "-o", &opts, "tmpfs", p(at)]);
        self.undo.push(("umount", at.to_path_buf()));
    }

    /// ext4 without a journal (so that only data writes fail) on a loop device backed
    /// by `image`, mounted at `at`.
    fn ext4_on_loop(&mut self, image: &Path, at: &Path) -> PathBuf {
        std::fs::File::create(image)
            .unwrap()
            .set_len(256 << 20)
            .unwrap();
        // One at a time: two `losetup -f` at once may pick the same free device.
        static LOSETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let dev = {
            let _one = LOSETUP.lock().unwrap_or_else(|e| e.into_inner());
            PathBuf::from(run("losetup", &["-f", "--show", p(image)]))
        };
        self.undo.push(("losetup -d", dev.clone()));
        run("mkfs.ext4", &["-q", "-O", "^has_journal", p(&dev)]);
        std::fs::create_dir_all(at).unwrap();
        run("mount", &[p(&dev), p(at)]);
        self.undo.push(("umount", at.to_path_buf()));
        dev
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for (cmd, path) in self.undo.drain(..).rev() {
            // Lazily: a test that failed may still hold a file open on it.
            let (cmd, flag) = cmd.split_once(' ').unwrap_or((cmd, "-l"));
            let _ = Command::new(cmd)
                .arg(flag)
                .arg(&path)
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Fills the filesystem of `dir` with `dir/filler`, leaving `leave` bytes free (about:
/// tmpfs counts whole pages).
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 << 10];
    while f.write(&block).is_ok_and(|n| n > 0) {}
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(leave)).unwrap();
    path
}

/// A tmpfs of 1 MB with 100 KB left (a filler file takes the rest), for `audit.jsonl`.
struct SmallDisk {
    // Dropped first (unmounts), then the directory.
    _mounts: Mounts,
    filler: PathBuf,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new() -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("small");
        let mut mounts = Mounts::default();
        mounts.tmpfs(&mnt, "1m");
        SmallDisk {
            _mounts: mounts,
            filler: fill(&mnt, 100 << 10),
            path: mnt.join("audit.jsonl"),
            _dir: dir,
        }
    }
}

/// ext4 on a loop device whose backing store (a tmpfs of `backing` bytes) a filler
/// file has filled: writes reach the page cache, and fail under the fsync.
struct FailingDisk {
    // Dropped first (unmounts), then the directory.
    _mounts: Mounts,
    dev: PathBuf,
    mnt: PathBuf,
    filler: PathBuf,
    _dir: tempfile::TempDir,
}

impl FailingDisk {
    fn new(backing: &str) -> FailingDisk {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("backing");
        let mnt = dir.path().join("disk");
        let mut mounts = Mounts::default();
        mounts.tmpfs(&store, backing);
        let dev = mounts.ext4_on_loop(&store.join("disk.img"), &mnt);
        let filler = fill(&store, 0);
        FailingDisk {
            _mounts: mounts,
            dev,
            mnt,
            filler,
            _dir: dir,
        }
    }

    /// Frees the backing store: the device's writes succeed again.
    fn heal(&self) {
        std::fs::remove_file(&self.filler).unwrap();
    }

    /// Mounts the filesystem afresh, so that reads come from the disk, not the page
    /// cache.
    fn remount(&self) {
        run("umount", &[p(&self.mnt)]);
        run("mount", &[p(&self.dev), p(&self.mnt)]);
    }
}

async fn wait_stats(audit: &Audit, what: &str, secs: u64, ok: impl Fn(&SinkStats) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = audit.stats().remove(0);
        if ok(&s) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A group-commit sink on `disk` that has written events 0..5000 (a megabyte: the
/// filesystem's first blocks may already have backing store) and seen an fsync fail.
async fn written_while_failing(disk: &FailingDisk) -> (PathBuf, Audit, AuditHandle) {
    let path = disk.mnt.join("audit.jsonl");
    let (audit, handle) = start(&path, "commit_interval_ms = 50\n");
    for i in 0..5000 {
        audit.emit(event(i)).await;
    }
    wait_stats(&audit, "all written and an fsync failed", 10, |s| {
        s.written == 5000 && s.errors > 0
    })
    .await;
    (path, audit, handle)
}

/// The numbers of the file's events, checking it holds whole lines only and no region
/// the disk lost (NUL bytes).
fn file_ids(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    assert!(
        !bytes.contains(&0),
        "{} has NUL bytes: a region the disk lost",
        path.display()
    );
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "a torn last line");
    ids(&text)
}

/// The disk fills in the middle of a batch: the write that fails part-way must not
/// leave half a line (the next event written would be glued to it, and a SIEM drops
/// both), and every event is either a line of the file or counted as dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_mid_batch_leaves_whole_lines_and_counts_every_event() {
    let disk = SmallDisk::new();
    let (filler, path) = (&disk.filler, &disk.path);
    let (audit, handle) = start(path, "commit_interval_ms = 20\n");
    // About 200 bytes each: 2,000 events are four times the space left.
    for i in 0..2000 {
        audit.emit(event(i)).await;
    }
    wait_stats(&audit, "2,000 events written or dropped", 10, |s| {
        s.written + s.dropped == 2000
    })
    .await;
    let full = audit.stats().remove(0);
    assert!(full.dropped > 0 && full.errors > 0, "{full:?}");
    // Space again: the events after it are written, after a whole line.
    std::fs::remove_file(filler).unwrap();
    for i in 2000..2100 {
        audit.emit(event(i)).await;
    }
    let stats = handle.shutdown().await.remove(0);
    assert_eq!(stats.written + stats.dropped, 2100, "{stats:?}");
    let ids = file_ids(path);
    assert_eq!(
        ids.len() as u64,
        stats.written,
        "lines against written: {stats:?}"
    );
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "out of order or repeated"
    );
    assert_eq!(ids[ids.len() - 100..], (2000..2100).collect::<Vec<_>>()[..]);
}

/// Writes that reach the page cache but fail under the fsync (the device's backing
/// store is full): the kernel reports the error to that fsync only and drops the data,
/// so a sink that just retries the fsync later is told "done" over a hole of NULs. The
/// sink writes what it had not fsynced again, from where the last good fsync left the
/// file, and once the space is back every event is on the disk, once and in order: read
/// after a fresh mount, not from the page cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_writes_its_events_again_and_loses_none() {
    let disk = FailingDisk::new("16m");
    let (path, audit, handle) = written_while_failing(&disk).await;
    let failing = audit.stats().remove(0);
    // Space again: the shutdown's fsync (or one before it) succeeds.
    disk.heal();
    let stats = handle.shutdown().await.remove(0);
    assert_eq!((stats.written, stats.dropped), (5000, 0), "{stats:?}");
    assert!(stats.syncs > failing.syncs, "no fsync since: {stats:?}");
    disk.remount();
    assert_eq!(file_ids(&path), (0..5000).collect::<Vec<_>>());
}

/// While fsyncs keep failing, the sink keeps what it must write again only up to a
/// bound (32 MiB); past it, it takes no more events and the queue's policy applies
/// (here `block`: the producer waits). When the disk works again, the kept events and
/// the waiting ones reach it, every one once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_keeps_failing_holds_the_queue_at_a_bound() {
    let disk = FailingDisk::new("128m");
    let path = disk.mnt.join("audit.jsonl");
    let (audit, handle) = start(&path, "commit_interval_ms = 50\n");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = tokio::spawn({
        let (audit, stop) = (audit.clone(), stop.clone());
        async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                audit.emit(event(i)).await;
                i += 1;
            }
            i
        }
    });
    // Held: the bound reached, the queue full, nothing written between two looks
    // 300 ms apart (a retry that rewrites megabytes can take that long by itself).
    let deadline = Instant::now() + Duration::from_secs(60);
    let file_size = || std::fs::metadata(&path).map_or(0, |m| m.len());
    let (held, size) = loop {
        let a = audit.stats().remove(0);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let b = audit.stats().remove(0);
        let size = file_size();
        if b.errors > 0
            && b.queue_depth == b.queue_capacity
            && a.written == b.written
            && size >= 32 << 20
        {
            break (b, size);
        }
        assert!(Instant::now() < deadline, "never held: {b:?}");
    };
    assert!(!producer.is_finished());
    assert!(
        (32 << 20..40 << 20).contains(&size),
        "{size} bytes kept: {held:?}"
    );
    // Retries come and go (each rewrites what is kept, and takes a while): the bound
    // holds through them, not only at first.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = audit.stats().remove(0);
    assert!(later.errors > held.errors, "no retry in 4 s: {later:?}");
    let size = file_size();
    assert!(
        size < 40 << 20,
        "{size} bytes kept after retries: {later:?}"
    );
    assert!(!producer.is_finished());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    disk.heal();
    let emitted = producer.await.unwrap();
    let stats = handle.shutdown().await.remove(0);
    assert_eq!((stats.written, stats.dropped), (emitted, 0), "{stats:?}");
    disk.remount();
    assert_eq!(file_ids(&path), (0..emitted).collect::<Vec<_>>());
}

/// `sync` mode on a device whose fsyncs fail: each response's event is refused (the
/// gateway answers 503), counted as dropped, and cut off the file, so it cannot reach
/// the disk later as if its response had been served; nothing is kept, so the sink
/// never stops taking events. Once the disk works, events are durable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_refuses_and_cuts_off_what_a_failing_fsync_lost() {
    let disk = FailingDisk::new("16m");
    let path = disk.mnt.join("audit.jsonl");
    let (audit, handle) = start(&path, "durability = \"sync\"\n");
    for i in 0..20 {
        assert!(audit.emit_durable(event(i)).await.is_err(), "event {i}");
    }
    disk.heal();
    for i in 20..30 {
        audit.emit_durable(event(i)).await.unwrap();
    }
    let stats = handle.shutdown().await.remove(0);
    assert_eq!((stats.written, stats.dropped), (10, 20), "{stats:?}");
    disk.remount();
    assert_eq!(file_ids(&path), (20..30).collect::<Vec<_>>());
}

/// A sink stopped while its fsyncs still fail: the events written since the last good
/// fsync may not be on disk, so they count as dropped, not written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_never_fsynced_by_the_shutdown_count_as_dropped() {
    let disk = FailingDisk::new("16m");
    let (_, _audit, handle) = written_while_failing(&disk).await;
    let stats = handle.shutdown().await.remove(0);
    assert_eq!((stats.written, stats.dropped), (0, 5000), "{stats:?}");
}

/// `sync` mode on a disk that fills: a response is refused when its event's batch
/// fails to be written, and then none of that batch stays in the file to reach the
/// disk with the next one (a batch of many events fails part-way, its first 32 KB
/// chunks written). Every event answered is in the file, and none refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_cuts_off_a_batch_whose_write_fails_part_way() {
    let disk = SmallDisk::new();
    let (filler, path) = (&disk.filler, &disk.path);
    let (audit, handle) = start(path, "durability = \"sync\"\n");
    // 2,000 events at once (about 400 KB, four times the space left): batches of many.
    let tasks: Vec<_> = (0..2000)
        .map(|i| {
            let audit = audit.clone();
            tokio::spawn(async move { (i, audit.emit_durable(event(i)).await.is_ok()) })
        })
        .collect();
    let mut answered = Vec::new();
    for t in tasks {
        let (i, ok) = t.await.unwrap();
        if ok {
            answered.push(i);
        }
    }
    assert!(answered.len() < 2000, "the disk never filled");
    std::fs::remove_file(filler).unwrap();
    for i in 2000..2010 {
        audit.emit_durable(event(i)).await.unwrap();
        answered.push(i);
    }
    let stats = handle.shutdown().await.remove(0);
    assert_eq!(
        (stats.written, stats.dropped),
        (answered.len() as u64, 2010 - answered.len() as u64),
        "{stats:?}"
    );
    let mut ids = file_ids(path);
    ids.sort_unstable();
    answered.sort_unstable();
    assert_eq!(ids, answered, "the file against the events answered");
}
