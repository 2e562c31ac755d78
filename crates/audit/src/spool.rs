//! The disk spool of a network sink: formatted messages waiting for the collector.
//!
//! One append-only file of records `[u32 big-endian length][message]`. Three offsets:
//! `committed` (everything before it was acknowledged by the collector), `cursor`
//! (everything before it was sent at least once) and `end`. A reconnect rewinds the
//! cursor to `committed`, so replay resumes exactly after the last acknowledged
//! message. When everything is acknowledged the file is truncated; at shutdown the
//! unacknowledged tail is compacted to the start of the file so the next start
//! replays it first. Appends are fsynced before they count as spooled.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::error::Error;

/// Largest message the spool accepts (a larger length prefix means corruption).
const MAX_RECORD: u32 = 16 << 20;

pub(crate) struct Spool {
    path: PathBuf,
    file: tokio::fs::File,
    end: u64,
    cursor: u64,
    committed: u64,
    pending: u64,
    max: u64,
}

impl Spool {
    /// Opens or creates the spool, keeping every complete record of an earlier run
    /// (a torn last record from a crash is cut off).
    pub fn open(path: &Path, max: u64) -> Result<Spool, Error> {
        let err = |source| Error::Io {
            what: "audit spool",
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let data = match std::fs::read(path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err(e)),
        };
        let mut off = 0usize;
        let mut pending = 0u64;
        while off + 4 <= data.len() {
            let mut len = [0u8; 4];
            len.copy_from_slice(&data[off..off + 4]);
            let len = u32::from_be_bytes(len);
            if len > MAX_RECORD || off + 4 + len as usize > data.len() {
                break;
            }
            off += 4 + len as usize;
            pending += 1;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(err)?;
        if (off as u64) < data.len() as u64 {
            tracing::warn!(spool = %path.display(), kept = off, len = data.len(), "audit spool had a torn record; cut");
            file.set_len(off as u64).map_err(err)?;
        }
        Ok(Spool {
            path: path.to_path_buf(),
            file: tokio::fs::File::from_std(file),
            end: off as u64,
            cursor: 0,
            committed: 0,
            pending,
            max,
        })
    }

    /// Messages spooled and not yet acknowledged.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Whether some message was never sent on the current connection.
    pub fn has_unsent(&self) -> bool {
        self.cursor < self.end
    }

    /// Whether any message is spooled and not yet acknowledged.
    pub fn is_busy(&self) -> bool {
        self.committed < self.end
    }

    /// Appends `msgs` in order and fsyncs. Returns how many fit under the size limit;
    /// the rest (a suffix) did not go in.
    pub async fn append<'a>(
        &mut self,
        msgs: impl IntoIterator<Item = &'a [u8]>,
    ) -> io::Result<usize> {
        let mut buf = Vec::new();
        let mut n = 0;
        for m in msgs {
            let add = 4 + m.len() as u64;
            if self.end + buf.len() as u64 + add > self.max || m.len() as u64 > MAX_RECORD as u64 {
                break;
            }
            buf.extend_from_slice(&(m.len() as u32).to_be_bytes());
            buf.extend_from_slice(m);
            n += 1;
        }
        if n == 0 {
            return Ok(0);
        }
        self.file.seek(SeekFrom::Start(self.end)).await?;
        self.file.write_all(&buf).await?;
        self.file.flush().await?;
        self.file.sync_data().await?;
        self.end += buf.len() as u64;
        self.pending += n as u64;
        Ok(n)
    }

    /// Reads up to `max_msgs` messages (about `max_bytes`) from the cursor, each with
    /// the offset just after it, and advances the cursor.
    pub async fn read_batch(
        &mut self,
        max_msgs: usize,
        max_bytes: usize,
    ) -> io::Result<Vec<(Vec<u8>, u64)>> {
        let left = (self.end - self.cursor) as usize;
        self.file.seek(SeekFrom::Start(self.cursor)).await?;
        let mut head = [0u8; 4];
        self.file.read_exact(&mut head).await?;
        let first = 4 + u32::from_be_bytes(head).min(MAX_RECORD) as usize;
        let want = left.min(max_bytes).max(first).min(left);
        let mut data = vec![0u8; want];
        self.file.seek(SeekFrom::Start(self.cursor)).await?;
        self.file.read_exact(&mut data).await?;
        let mut out = Vec::new();
        let mut off = 0usize;
        while out.len() < max_msgs && off + 4 <= data.len() && (off < max_bytes || out.is_empty()) {
            let mut len = [0u8; 4];
            len.copy_from_slice(&data[off..off + 4]);
            let len = u32::from_be_bytes(len) as usize;
            if off + 4 + len > data.len() {
                break;
            }
            let msg = data[off + 4..off + 4 + len].to_vec();
            off += 4 + len;
            out.push((msg, self.cursor + off as u64));
        }
        if out.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "audit spool {} is corrupt at offset {}",
                    self.path.display(),
                    self.cursor
                ),
            ));
        }
        self.cursor += off as u64;
        Ok(out)
    }

    /// The collector acknowledged everything up to `offset` (one message). Truncates
    /// the file once everything is acknowledged.
    pub async fn commit(&mut self, offset: u64) -> io::Result<()> {
        if offset > self.committed {
            self.committed = offset;
            self.pending = self.pending.saturating_sub(1);
        }
        if self.committed == self.end && self.cursor == self.end && self.end > 0 {
            self.file.set_len(0).await?;
            self.end = 0;
            self.cursor = 0;
            self.committed = 0;
            self.pending = 0;
        }
        Ok(())
    }

    /// Resends from the last acknowledged message (after a reconnect).
    pub fn rewind(&mut self) {
        self.cursor = self.committed;
    }

    /// Moves the unacknowledged tail to the start of the file and fsyncs (shutdown).
    pub async fn compact(&mut self) -> io::Result<()> {
        if self.committed == 0 {
            self.file.sync_all().await?;
            return Ok(());
        }
        let mut tail = vec![0u8; (self.end - self.committed) as usize];
        self.file.seek(SeekFrom::Start(self.committed)).await?;
        self.file.read_exact(&mut tail).await?;
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = tokio::fs::File::create(&tmp).await?;
        f.write_all(&tail).await?;
        f.sync_all().await?;
        tokio::fs::rename(&tmp, &self.path).await?;
        self.file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .await?;
        self.end = tail.len() as u64;
        self.cursor = 0;
        self.committed = 0;
        Ok(())
    }
}
