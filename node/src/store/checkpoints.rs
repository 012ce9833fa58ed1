//! The checkpoints this node signed of its own log, kept in order so that an
//! export carries them and an auditor can check every one against the log;
//! and, in a second file of the same format, the latest checkpoint this node
//! witnessed of every other node.
//! Frames as in the agreement log: u32 LE length, u32 LE CRC32C, the note.
//!
//! Losing the last few to a crash costs nothing: a checkpoint only covers
//! durable records and Ed25519 signing is deterministic, so signing the same
//! size again gives the very same note. The file is fsync'd from time to time,
//! not on every append.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use fulcrum_protocol::checkpoint::MAX_NOTE_BYTES;

const HEADER: usize = 8;

/// The open checkpoints file.
#[derive(Debug)]
pub struct CheckpointFile {
    path: PathBuf,
    file: File,
    dirty: bool,
}

impl CheckpointFile {
    /// Opens (creating) the file, cuts a torn tail and returns the latest
    /// note and how many there are.
    pub fn open(path: &Path) -> io::Result<(CheckpointFile, Option<String>, u64)> {
        let file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        let (notes, good_end) = scan(&file)?;
        if good_end < file.metadata()?.len() {
            file.set_len(good_end)?;
            file.sync_all()?;
        }
        let count = notes.len() as u64;
        let latest = notes.into_iter().last();
        Ok((CheckpointFile { path: path.to_path_buf(), file, dirty: false }, latest, count))
    }

    /// Appends a note (not yet fsync'd; see [`sync`](Self::sync)).
    pub fn append(&mut self, note: &str) -> io::Result<()> {
        self.file.write_all(&frame(note))?;
        self.dirty = true;
        Ok(())
    }

    /// Replaces the file at `path` by one holding `notes`, durably and
    /// atomically: written beside it, fsync'd, renamed over it, and the
    /// directory fsync'd. A crash at any point leaves the old file or the
    /// new one, whole.
    pub fn rewrite<'a>(path: &Path, notes: impl IntoIterator<Item = &'a str>) -> io::Result<CheckpointFile> {
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        {
            let mut out = io::BufWriter::new(File::create(&tmp)?);
            for note in notes {
                out.write_all(&frame(note))?;
            }
            out.into_inner().map_err(io::IntoInnerError::into_error)?.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let file = OpenOptions::new().read(true).append(true).open(path)?;
        Ok(CheckpointFile { path: path.to_path_buf(), file, dirty: false })
    }

    /// Makes every appended note durable.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn frame(note: &str) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER + note.len());
    frame.extend_from_slice(&(note.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32c::crc32c(note.as_bytes()).to_le_bytes());
    frame.extend_from_slice(note.as_bytes());
    frame
}

/// Every good note in the file, in order (a torn tail is ignored).
pub fn read_checkpoints(path: &Path) -> io::Result<Vec<String>> {
    match File::open(path) {
        Ok(file) => Ok(scan(&file)?.0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn scan(file: &File) -> io::Result<(Vec<String>, u64)> {
    let mut reader = BufReader::new(file);
    let mut notes = Vec::new();
    let mut good_end = 0u64;
    loop {
        let mut header = [0u8; HEADER];
        if read_full(&mut reader, &mut header)? < HEADER {
            break;
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || len > MAX_NOTE_BYTES {
            break;
        }
        let mut note = vec![0u8; len];
        if read_full(&mut reader, &mut note)? < len || crc32c::crc32c(&note) != crc {
            break;
        }
        let Ok(note) = String::from_utf8(note) else { break };
        notes.push(note);
        good_end += (HEADER + len) as u64;
    }
    Ok((notes, good_end))
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints");
        let (mut f, latest, count) = CheckpointFile::open(&path).unwrap();
        assert_eq!((latest, count), (None, 0));
        f.append("a\n1\nx\n\n— a sig\n").unwrap();
        f.append("a\n2\ny\n\n— a sig\n").unwrap();
        f.sync().unwrap();
        drop(f);
        // A torn frame at the end.
        let mut raw = OpenOptions::new().append(true).open(&path).unwrap();
        raw.write_all(&[9, 0, 0, 0, 1, 2]).unwrap();
        drop(raw);
        assert_eq!(read_checkpoints(&path).unwrap().len(), 2);
        let (mut f, latest, count) = CheckpointFile::open(&path).unwrap();
        assert_eq!((latest.as_deref(), count), (Some("a\n2\ny\n\n— a sig\n"), 2));
        f.append("a\n3\nz\n\n— a sig\n").unwrap();
        f.sync().unwrap();
        assert_eq!(read_checkpoints(&path).unwrap().len(), 3);
    }

    #[test]
    fn a_rewrite_replaces_every_note_and_appends_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("witnessed");
        let (mut f, _, _) = CheckpointFile::open(&path).unwrap();
        for n in 0..10 {
            f.append(&format!("a\n{n}\nx\n\n— a sig\n")).unwrap();
        }
        f.sync().unwrap();
        let mut f = CheckpointFile::rewrite(&path, ["b\n1\nx\n\n— b sig\n", "c\n2\nx\n\n— c sig\n"]).unwrap();
        f.append("d\n3\nx\n\n— d sig\n").unwrap();
        f.sync().unwrap();
        let notes = read_checkpoints(&path).unwrap();
        assert_eq!(notes.len(), 3);
        assert!(notes[0].starts_with("b\n") && notes[2].starts_with("d\n"));
        assert!(!dir.path().join("witnessed.tmp").exists());
    }
}
