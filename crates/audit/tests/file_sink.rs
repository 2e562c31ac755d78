//! The file sink on a real filesystem: group commit, `sync` durability, rotation by
//! size and age with gzip, pruning, and the queue-full policies against a writer that
//! really blocks (a FIFO nobody reads), and a file the kernel refuses to write.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;

use common::{config, event, ids, start};
use intraport_audit::Audit;

/// Polls `f` until it returns `Some` or the deadline passes.
fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn wait_async<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn read_any(p: &Path) -> String {
    let mut s = String::new();
    if p.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(std::fs::File::open(p).unwrap())
            .read_to_string(&mut s)
            .unwrap();
    } else {
        std::fs::File::open(p)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
    }
    s
}

fn rotated(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let f = p.file_name().unwrap().to_string_lossy().into_owned();
            f.starts_with(&format!("{name}.")) && !f.ends_with(".tmp")
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_writes_every_event_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (audit, handle) = start(&path, "commit_interval_ms = 50\n");
    assert!(!audit.is_sync());
    for i in 0..1000 {
        audit.emit(event(i)).await;
    }
    // Written without any shutdown or flush call: the worker drains the queue.
    wait_async("1000 written", 10, || {
        (audit.stats()[0].written == 1000).then_some(())
    })
    .await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(ids(&text), (0..1000).collect::<Vec<_>>());
    let stats = handle.shutdown().await;
    assert_eq!(stats[0].dropped, 0);
    assert_eq!(stats[0].queue_depth, 0);
    // After shutdown, events are refused and counted.
    audit.emit(event(5000)).await;
    assert_eq!(audit.stats()[0].dropped, 1);
    assert!(
        audit.emit_durable(event(5001)).await.is_ok(),
        "no sync sink: nothing to wait for"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_event_is_in_the_file_when_emit_durable_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let cfg = config(&format!(
        "[audit]\n[[audit.sink]]\ntype = \"file\"\npath = {:?}\ndurability = \"sync\"\n\
         [[audit.sink]]\ntype = \"file\"\npath = {:?}\nformat = \"cef\"\n",
        path,
        dir.path().join("other.cef")
    ));
    let (audit, handle) = Audit::start(&cfg).unwrap();
    assert!(audit.is_sync());
    for i in 0..50 {
        audit.emit_durable(event(i)).await.unwrap();
        // Read right after: the line is there (and was fsynced before the answer).
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            ids(&text).last(),
            Some(&i),
            "event {i} missing right after emit_durable"
        );
    }
    // Concurrent durable emitters share fsyncs and each sees its event.
    let mut tasks = Vec::new();
    for i in 100..164 {
        let a = audit.clone();
        let p = path.clone();
        tasks.push(tokio::spawn(async move {
            a.emit_durable(event(i)).await.unwrap();
            // Another batch may be half written as we read: only whole lines count
            // (this event's line was written and fsynced before emit_durable returned).
            let text = std::fs::read_to_string(&p).unwrap();
            let whole = &text[..text.rfind('\n').map_or(0, |n| n + 1)];
            assert!(ids(whole).contains(&i));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    handle.shutdown().await;
    let err = audit.emit_durable(event(999)).await.unwrap_err();
    assert!(err.to_string().contains("not durable"), "{err}");
    let cef = std::fs::read_to_string(dir.path().join("other.cef")).unwrap();
    assert_eq!(cef.lines().count(), 114);
    assert!(cef.lines().all(|l| l.starts_with("CEF:0|intraport|")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_rotation_gzips_and_keeps_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (audit, handle) = start(&path, "rotate_size_bytes = 4000\n");
    for i in 0..200 {
        audit.emit(event(i)).await;
    }
    handle.shutdown().await;
    // Gzip runs in the background: wait until no uncompressed rotated file is left.
    let files = wait_for("rotated files compressed", 20, || {
        let r = rotated(dir.path(), "audit.jsonl");
        r.iter()
            .all(|p| p.extension().is_some_and(|e| e == "gz"))
            .then_some(r)
    });
    assert!(
        files.len() >= 5,
        "expected several rotations, got {files:?}"
    );
    let mut all = Vec::new();
    for f in &files {
        let text = read_any(f);
        assert!(
            text.len() <= 4000,
            "{} has {} bytes",
            f.display(),
            text.len()
        );
        assert!(text.ends_with('\n'));
        all.extend(ids(&text));
    }
    all.extend(ids(&std::fs::read_to_string(&path).unwrap()));
    assert_eq!(all, (0..200).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_prunes_old_rotations_and_age_rotation_happens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.log");
    let (audit, handle) = start(
        &path,
        "rotate_size_bytes = 1000\nkeep = 2\ncompress = false\n",
    );
    for i in 0..100 {
        audit.emit(event(i)).await;
    }
    handle.shutdown().await;
    let files = wait_for("pruned to 2", 20, || {
        let r = rotated(dir.path(), "a.log");
        (r.len() == 2).then_some(r)
    });
    // The newest two are kept: their events are the last ones before the live file.
    let mut kept: Vec<u64> = files.iter().flat_map(|f| ids(&read_any(f))).collect();
    kept.extend(ids(&std::fs::read_to_string(&path).unwrap()));
    assert_eq!(kept.last(), Some(&99));
    assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "{kept:?}");

    // Age: a 1 s interval rotates a file that keeps receiving events.
    let path = dir.path().join("b.log");
    let (audit, handle) = start(&path, "rotate_interval = \"1s\"\ncompress = false\n");
    let mut i = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while rotated(dir.path(), "b.log").is_empty() {
        assert!(Instant::now() < deadline, "no time rotation");
        audit.emit(event(i)).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.shutdown().await;
    let mut all: Vec<u64> = rotated(dir.path(), "b.log")
        .iter()
        .flat_map(|f| ids(&read_any(f)))
        .collect();
    all.extend(ids(&std::fs::read_to_string(&path).unwrap()));
    assert_eq!(all, (0..i).collect::<Vec<_>>());
}

/// A FIFO with a reader that reads nothing: the sink's write blocks for real.
fn stuck_fifo(dir: &Path) -> (PathBuf, std::fs::File) {
    let p = dir.join("fifo");
    let st = std::process::Command::new("mkfifo")
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    let reader = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(0o4000) // O_NONBLOCK: do not wait for a writer
            .open(&p)
            .unwrap()
    };
    (p, reader)
}

fn drain(mut reader: &std::fs::File) -> usize {
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return total,
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_full_drop_counts_every_drop() {
    let dir = tempfile::tempdir().unwrap();
    let (fifo, reader) = stuck_fifo(dir.path());
    let cfg = config(&format!(
        "[audit]\nqueue_capacity = 8\nqueue_full = \"drop\"\n[[audit.sink]]\ntype = \"file\"\npath = {:?}\n",
        fifo
    ));
    let (audit, handle) = Audit::start(&cfg).unwrap();
    let total = 5000u64;
    for i in 0..total {
        audit.emit(event(i)).await; // never waits under "drop"
    }
    let s = audit.stats()[0].clone();
    assert!(s.dropped > 0, "{s:?}");
    assert!(s.queue_depth <= 8);
    // Unblock the writer and stop: every event is either written or counted dropped.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = done.clone();
    let drainer = std::thread::spawn(move || {
        let mut n = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !d.load(std::sync::atomic::Ordering::Relaxed) {
            n += drain(&reader);
            std::thread::sleep(Duration::from_millis(5));
        }
        n + drain(&reader)
    });
    let stats = handle.shutdown().await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let bytes = drainer.join().unwrap();
    assert_eq!(stats[0].written + stats[0].dropped, total, "{:?}", stats[0]);
    assert!(bytes > 0);
    // After shutdown an event is counted as dropped, never lost silently.
    audit.emit(event(1)).await;
    assert_eq!(audit.stats()[0].dropped, stats[0].dropped + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_full_block_waits_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (fifo, reader) = stuck_fifo(dir.path());
    let cfg = config(&format!(
        "[audit]\nqueue_capacity = 4\n[[audit.sink]]\ntype = \"file\"\npath = {:?}\n",
        fifo
    ));
    let (audit, handle) = Audit::start(&cfg).unwrap();
    let a = audit.clone();
    let total = 3000u64;
    let producer = tokio::spawn(async move {
        for i in 0..total {
            a.emit(event(i)).await;
        }
    });
    // The producer is held back by the full queue, not dropping.
    wait_async("queue full", 10, || {
        (audit.stats()[0].queue_depth == 4).then_some(())
    })
    .await;
    assert!(!producer.is_finished());
    assert_eq!(audit.stats()[0].dropped, 0);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 1 << 16];
    while !producer.is_finished() || audit.stats()[0].written < total {
        assert!(Instant::now() < deadline, "stuck: {:?}", audit.stats());
        match (&reader).read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(2)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    producer.await.unwrap();
    let stats_reader = std::thread::spawn(move || {
        let mut rest = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let mut b = vec![0u8; 1 << 16];
            match (&reader).read(&mut b) {
                Ok(0) => break,
                Ok(n) => rest.extend_from_slice(&b[..n]),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        rest
    });
    let stats = handle.shutdown().await;
    got.extend(stats_reader.join().unwrap());
    assert_eq!(stats[0].dropped, 0);
    assert_eq!(stats[0].written, total);
    let text = String::from_utf8(got).unwrap();
    assert_eq!(ids(&text), (0..total).collect::<Vec<_>>());
}

#[test]
fn bad_paths_fail_the_start_with_the_path() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = config(
            "[audit]\n[[audit.sink]]\ntype = \"file\"\npath = \"/proc/intraport-audit-test/x.log\"\n",
        );
        let err = Audit::start(&cfg).err().expect("must fail");
        assert!(err.to_string().contains("/proc/intraport-audit-test"), "{err}");
    });
}

/// A file the kernel refuses to write (`/dev/full`: every write fails with "no space
/// left"): every event is counted as dropped and the errors as errors, none as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_cannot_be_written_are_counted_as_dropped() {
    let cfg = config("[audit]\n[[audit.sink]]\ntype = \"file\"\npath = \"/dev/full\"\n");
    let (audit, handle) = Audit::start(&cfg).unwrap();
    for i in 0..500 {
        audit.emit(event(i)).await;
    }
    wait_async("500 dropped", 10, || {
        (audit.stats()[0].dropped == 500).then_some(())
    })
    .await;
    let stats = handle.shutdown().await;
    assert_eq!(stats[0].written, 0);
    assert_eq!(stats[0].dropped, 500);
    assert!(stats[0].errors >= 1, "{stats:?}");
}

/// Under a steady stream of events the worker never finds its queue empty, yet group
/// commit still fsyncs about once per commit interval: the deadline is checked after
/// every batch, not only while the queue is idle (where a batch always wins, and the
/// worker put the fsync off for as long as events kept coming).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_fsyncs_every_interval_under_steady_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (audit, handle) = start(&path, "commit_interval_ms = 50\n");
    let emitter = audit.clone();
    let rt = tokio::runtime::Handle::current();
    // From a thread of its own, keep at least 100 events waiting: the worker empties
    // the queue when it takes a batch, and it is full again long before the batch is
    // written. Until five fsyncs, or ten seconds.
    let (emitted, syncs, took) = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut i = 0;
        loop {
            let s = &emitter.stats()[0];
            if s.syncs >= 5 || start.elapsed() > Duration::from_secs(10) {
                return (i, s.syncs, start.elapsed());
            }
            if s.queue_depth < 200 {
                rt.block_on(emitter.emit(event(i)));
                i += 1;
            } else {
                // Not a sleep: the queue must not run dry while this thread sleeps.
                std::thread::yield_now();
            }
        }
    })
    .await
    .unwrap();
    assert!(
        syncs >= 5,
        "{syncs} fsyncs in {took:?} of {emitted} events, a commit interval of 50 ms"
    );
    let stats = handle.shutdown().await;
    assert_eq!(stats[0].written, emitted);
    assert_eq!(stats[0].dropped, 0);
}
