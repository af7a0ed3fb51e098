//! The local spool: an append-only file of audit events that could not reach the store yet.
//!
//! One JSON line per event, `{"writer", "seq", "event"}`, appended in the writer's order and
//! `fsync`ed after every append (appends only happen while the store is unreachable, in
//! batches, so the cost is paid per batch, not per event). It is replayed from the front when
//! the store is back and truncated once fully replayed. A crash during replay replays again
//! on the next start; the store skips what it already has (see
//! [`crate::store::AuditStore::append_audit`]). A torn last line (a crash mid-append) is
//! skipped and counted as dropped.
//!
//! The file is locked exclusively while open, so two processes cannot share a spool.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Sequenced;

/// One spooled event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoolLine {
    /// The writer that numbered it.
    pub writer: String,
    /// The event and its number.
    #[serde(flatten)]
    pub sequenced: Sequenced,
}

/// A chunk read from the spool.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The events, in file order.
    pub lines: Vec<SpoolLine>,
    /// Lines that could not be read (torn or corrupt); skipped.
    pub unreadable: usize,
    /// The offset just after the chunk: pass it to [`Spool::consumed`] once it is stored.
    pub end: u64,
}

/// The spool file.
pub struct Spool {
    path: PathBuf,
    file: File,
    len: u64,
    /// Everything before this offset is in the store.
    replayed_to: u64,
    max_bytes: u64,
}

impl Spool {
    /// Opens (or creates) the spool at `path`, locked for this process; at most `max_bytes`.
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        file.try_lock().map_err(|_| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "{} is locked by another process (each instance needs its own spool)",
                    path.display()
                ),
            )
        })?;
        let len = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            len,
            replayed_to: 0,
            max_bytes,
        })
    }

    /// The spool's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether events wait to be replayed.
    pub fn has_pending(&self) -> bool {
        self.replayed_to < self.len
    }

    /// Bytes waiting to be replayed.
    pub fn pending_bytes(&self) -> u64 {
        self.len - self.replayed_to
    }

    /// Appends `events` of `writer` and syncs them to disk. Refuses (leaving the file as it
    /// was) when the spool would grow past its bound.
    pub fn append(&mut self, writer: &str, events: &[Sequenced]) -> io::Result<()> {
        let mut buffer = Vec::with_capacity(events.len() * 256);
        for sequenced in events {
            let line = SpoolLine {
                writer: writer.to_owned(),
                sequenced: sequenced.clone(),
            };
            serde_json::to_writer(&mut buffer, &line)?;
            buffer.push(b'\n');
        }
        if self.len + buffer.len() as u64 > self.max_bytes {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "spool {} would exceed its bound of {} bytes",
                    self.path.display(),
                    self.max_bytes
                ),
            ));
        }
        self.file.write_all(&buffer)?;
        self.file.sync_data()?;
        self.len += buffer.len() as u64;
        Ok(())
    }

    /// Reads up to `max` events from the first one not yet replayed.
    pub fn read_chunk(&mut self, max: usize) -> io::Result<Chunk> {
        let mut reader = BufReader::new(&self.file);
        reader.seek(SeekFrom::Start(self.replayed_to))?;
        let mut chunk = Chunk {
            end: self.replayed_to,
            ..Chunk::default()
        };
        let mut line = String::new();
        while chunk.lines.len() < max && chunk.end < self.len {
            line.clear();
            let read = reader.read_line(&mut line)?;
            if read == 0 {
                break;
            }
            chunk.end += read as u64;
            match serde_json::from_str::<SpoolLine>(line.trim_end()) {
                Ok(parsed) if line.ends_with('\n') => chunk.lines.push(parsed),
                _ => chunk.unreadable += 1,
            }
        }
        Ok(chunk)
    }

    /// Marks everything before `end` as stored; truncates the file once all of it is.
    pub fn consumed(&mut self, end: u64) -> io::Result<()> {
        self.replayed_to = end.min(self.len);
        if self.replayed_to == self.len && self.len > 0 {
            self.file.set_len(0)?;
            self.file.sync_all()?;
            self.len = 0;
            self.replayed_to = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditEvent, Source};
    use crate::decision::{Mode, Reason, Verdict};

    fn events(range: std::ops::Range<u64>) -> Vec<Sequenced> {
        range
            .map(|seq| Sequenced {
                seq,
                event: AuditEvent::decision(
                    Verdict::Deny,
                    Reason::NotOwner,
                    Mode::Enforced,
                    Source::Validate,
                    "test",
                ),
            })
            .collect()
    }

    #[test]
    fn appends_replays_in_order_and_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool/audit.jsonl");
        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        assert!(!spool.has_pending());
        spool.append("w1", &events(1..4)).unwrap();
        spool.append("w1", &events(4..6)).unwrap();
        let chunk = spool.read_chunk(3).unwrap();
        assert_eq!(
            chunk
                .lines
                .iter()
                .map(|l| l.sequenced.seq)
                .collect::<Vec<_>>(),
            [1, 2, 3]
        );
        // Not consumed: read again from the same place.
        assert_eq!(spool.read_chunk(3).unwrap().lines[0].sequenced.seq, 1);
        spool.consumed(chunk.end).unwrap();
        let rest = spool.read_chunk(10).unwrap();
        assert_eq!(rest.lines.len(), 2);
        spool.consumed(rest.end).unwrap();
        assert!(!spool.has_pending());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "truncated");
    }

    #[test]
    fn survives_reopening_and_skips_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        {
            let mut spool = Spool::open(&path, 1 << 20).unwrap();
            spool.append("w1", &events(1..3)).unwrap();
        }
        // A crash mid-append leaves half a line.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"writer\":\"w1\",\"se").unwrap();
        drop(file);
        let mut spool = Spool::open(&path, 1 << 20).unwrap();
        let chunk = spool.read_chunk(10).unwrap();
        assert_eq!(chunk.lines.len(), 2);
        assert_eq!(chunk.unreadable, 1);
        spool.consumed(chunk.end).unwrap();
        assert!(!spool.has_pending());
    }

    #[test]
    fn is_locked_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut spool = Spool::open(&path, 600).unwrap();
        assert!(
            Spool::open(&path, 600).is_err(),
            "a second opener is refused"
        );
        spool.append("w1", &events(1..2)).unwrap();
        let err = spool.append("w1", &events(2..10)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(spool.read_chunk(10).unwrap().lines.len(), 1, "unchanged");
    }
}
