//! The change log's on-disk format and a reader that follows it.
//!
//! ```text
//! header (24 bytes):  "TABBYLOG" | version u32 LE | 0u32 | base revision u64 LE
//! record:             body_len u32 LE | crc32(body) u32 LE | body
//! body:               revision u64 LE | op u8 | kind u8 | namespace | name | resource JSON
//!                     namespace: u16 LE length (0xFFFF = none) + UTF-8 bytes
//!                     name:      u16 LE length + UTF-8 bytes
//! ```
//!
//! Records are in strictly increasing revision order. `base` is the compaction point: every
//! revision at or below it has been dropped from the log (0 for a log that was never
//! compacted). A record is written with one `pwrite` while the writer holds the exclusive lock,
//! so a reader can only ever see a *torn* record at the very end of the file, left by a writer
//! that was killed mid-write; the length prefix and checksum make such a record recognisable,
//! and the next writer truncates it away.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use api::{Key, Kind};

use crate::{Error, Revision};

pub(crate) const MAGIC: &[u8; 8] = b"TABBYLOG";
pub(crate) const VERSION: u32 = 1;
pub(crate) const HEADER_LEN: u64 = 24;
/// Length prefix and checksum in front of every record body.
pub(crate) const FRAME_LEN: usize = 8;
/// A body longer than this cannot have been written by us: treat the record as garbage rather
/// than trying to allocate for it.
const MAX_BODY_LEN: usize = 64 << 20;
/// A reader reads at most about this much per call, so a watcher far behind catches up in
/// bounded steps instead of reading a whole log into memory at once.
const READ_CHUNK: usize = 4 << 20;

/// What a record did to its resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Added = 1,
    Modified = 2,
    Deleted = 3,
}

impl Op {
    fn from_byte(b: u8) -> Option<Op> {
        match b {
            1 => Some(Op::Added),
            2 => Some(Op::Modified),
            3 => Some(Op::Deleted),
            _ => None,
        }
    }
}

/// One decoded record. `json` is the resource as stored: its new state for `Added`/`Modified`,
/// its last state for `Deleted`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Record {
    pub revision: u64,
    pub op: Op,
    pub key: Key,
    pub json: Vec<u8>,
}

impl Record {
    /// The record framed for the log: length, checksum, body.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let ns_len = self.key.namespace.as_ref().map_or(0, |n| n.len());
        let mut out =
            Vec::with_capacity(FRAME_LEN + 16 + ns_len + self.key.name.len() + self.json.len());
        out.extend_from_slice(&[0; FRAME_LEN]);
        out.extend_from_slice(&self.revision.to_le_bytes());
        out.push(self.op as u8);
        out.push(kind_index(self.key.kind));
        match &self.key.namespace {
            None => out.extend_from_slice(&u16::MAX.to_le_bytes()),
            Some(ns) => put_str(&mut out, ns),
        }
        put_str(&mut out, &self.key.name);
        out.extend_from_slice(&self.json);
        let body_len = (out.len() - FRAME_LEN) as u32;
        let crc = crc32(&out[FRAME_LEN..]);
        out[0..4].copy_from_slice(&body_len.to_le_bytes());
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a body whose checksum has been verified.
    fn decode_body(body: &[u8]) -> Option<Record> {
        let mut r = body;
        let revision = u64::from_le_bytes(take(&mut r, 8)?.try_into().ok()?);
        let op = Op::from_byte(*take(&mut r, 1)?.first()?)?;
        let kind = *Kind::ALL.get(usize::from(*take(&mut r, 1)?.first()?))?;
        let ns_len = u16::from_le_bytes(take(&mut r, 2)?.try_into().ok()?);
        let namespace = if ns_len == u16::MAX {
            None
        } else {
            Some(
                std::str::from_utf8(take(&mut r, usize::from(ns_len))?)
                    .ok()?
                    .to_string(),
            )
        };
        let name_len = u16::from_le_bytes(take(&mut r, 2)?.try_into().ok()?);
        let name = std::str::from_utf8(take(&mut r, usize::from(name_len))?)
            .ok()?
            .to_string();
        Some(Record {
            revision,
            op,
            key: Key {
                kind,
                namespace,
                name,
            },
            json: r.to_vec(),
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Kubernetes names are at most 253 bytes; anything that does not fit a u16 is cut at the
    // encoder rather than corrupting the frame (the datastore rejects such keys before this).
    let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX - 1))];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if r.len() < n {
        return None;
    }
    let (head, rest) = r.split_at(n);
    *r = rest;
    Some(head)
}

pub(crate) fn kind_index(kind: Kind) -> u8 {
    Kind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("every kind is in Kind::ALL") as u8
}

/// The 24-byte log header for a log whose history starts after `base`.
pub(crate) fn encode_header(base: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&base.to_le_bytes());
    h
}

fn decode_header(h: &[u8], what: &dyn Fn() -> String) -> Result<u64, Error> {
    if h.len() < HEADER_LEN as usize || &h[0..8] != MAGIC {
        return Err(Error::Corrupt {
            what: what(),
            reason: "not a tabby change log (bad magic)".into(),
        });
    }
    let version = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(Error::Corrupt {
            what: what(),
            reason: format!("log format version {version}, this build reads {VERSION}"),
        });
    }
    Ok(u64::from_le_bytes(h[16..24].try_into().expect("8 bytes")))
}

/// How a read of the log ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Every byte up to the end of the file was a complete, valid record.
    Clean,
    /// The file ends in an incomplete or unreadable record starting at `at`: a write in progress
    /// (when read without the lock) or a writer killed mid-write.
    Torn { at: u64 },
    /// An unreadable record at `at` is followed by more data: not something a crash leaves.
    Corrupt { at: u64 },
    /// More complete records follow; call again (the read was capped).
    More,
}

/// Identity of a file, to notice that compaction has replaced the log under a reader.
pub(crate) type FileId = (u64, u64);

pub(crate) fn file_id(meta: &std::fs::Metadata) -> FileId {
    (meta.dev(), meta.ino())
}

/// Follows one log file from an offset. Used by every datastore handle (under the lock) and by
/// every watch (without it).
pub(crate) struct LogReader {
    pub file: File,
    pub id: FileId,
    /// End of the last valid record read (or of the header).
    pub offset: u64,
    /// Revisions at or below this are compacted away.
    pub base: u64,
    buf: Vec<u8>,
}

impl LogReader {
    pub(crate) fn open(path: &Path) -> Result<LogReader, Error> {
        let what = || format!("opening change log {}", path.display());
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::Io {
                what: what(),
                source,
            })?;
        let meta = file.metadata().map_err(|source| Error::Io {
            what: what(),
            source,
        })?;
        let mut h = [0u8; HEADER_LEN as usize];
        let n = read_full_at(&file, &mut h, 0).map_err(|source| Error::Io {
            what: what(),
            source,
        })?;
        let base = decode_header(&h[..n], &what)?;
        Ok(LogReader {
            file,
            id: file_id(&meta),
            offset: HEADER_LEN,
            base,
            buf: Vec::new(),
        })
    }

    /// Whether the file at `path` is no longer the one this reader follows (compaction renamed a
    /// new log over it). A missing file counts as replaced.
    pub(crate) fn replaced(&self, path: &Path) -> Result<bool, Error> {
        match std::fs::metadata(path) {
            Ok(meta) => Ok(file_id(&meta) != self.id),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(source) => Err(Error::Io {
                what: format!("checking change log {}", path.display()),
                source,
            }),
        }
    }

    /// Reads the complete records after `offset`, calling `each` (with the record's offset) on
    /// every one whose revision is above `after` and advancing `offset` past every one. Records
    /// at or below `after` are checked but not decoded. Stops at the end of the file, at a torn
    /// or unreadable record, or after about [`READ_CHUNK`] bytes.
    pub(crate) fn read_new(
        &mut self,
        after: u64,
        mut each: impl FnMut(u64, Record) -> Result<(), Error>,
    ) -> Result<Tail, Error> {
        let len = self
            .file
            .metadata()
            .map_err(|source| Error::Io {
                what: "checking the change log's length".into(),
                source,
            })?
            .len();
        if len <= self.offset {
            return Ok(Tail::Clean);
        }
        let want = ((len - self.offset) as usize).min(READ_CHUNK);
        self.buf.resize(want, 0);
        let n =
            read_full_at(&self.file, &mut self.buf, self.offset).map_err(|source| Error::Io {
                what: format!("reading the change log at offset {}", self.offset),
                source,
            })?;
        self.buf.truncate(n);
        let mut pos = 0usize;
        loop {
            let rest = &self.buf[pos..];
            if rest.is_empty() {
                return Ok(if self.offset < len {
                    Tail::More
                } else {
                    Tail::Clean
                });
            }
            let at = self.offset;
            if rest.len() < FRAME_LEN {
                return Ok(Tail::Torn { at });
            }
            let body_len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
            if body_len > MAX_BODY_LEN {
                return Ok(self.unreadable(at, len, FRAME_LEN as u64));
            }
            let total = FRAME_LEN + body_len;
            if rest.len() < total {
                if self.offset + rest.len() as u64 >= len {
                    // The file ends inside this record.
                    return Ok(Tail::Torn { at });
                }
                if pos > 0 {
                    // The chunk cap cut it; the caller reads on from here.
                    return Ok(Tail::More);
                }
                // One record bigger than the chunk: read exactly it.
                self.buf.resize(total, 0);
                let n = read_full_at(&self.file, &mut self.buf, self.offset).map_err(|source| {
                    Error::Io {
                        what: format!("reading the change log at offset {}", self.offset),
                        source,
                    }
                })?;
                self.buf.truncate(n);
                if n < total {
                    return Ok(Tail::Torn { at });
                }
                continue;
            }
            let body = &rest[FRAME_LEN..total];
            if body.len() < 8 || crc32(body) != crc {
                return Ok(self.unreadable(at, len, total as u64));
            }
            let revision = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
            let record = if revision > after {
                match Record::decode_body(body) {
                    Some(record) => Some(record),
                    None => return Ok(self.unreadable(at, len, total as u64)),
                }
            } else {
                None
            };
            pos += total;
            self.offset += total as u64;
            if let Some(record) = record {
                each(at, record)?;
            }
        }
    }

    fn unreadable(&self, at: u64, len: u64, size: u64) -> Tail {
        if at + size >= len {
            Tail::Torn { at }
        } else {
            Tail::Corrupt { at }
        }
    }
}

/// Reads until `buf` is full or the file ends; returns how many bytes were read.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// CRC-32 (IEEE 802.3, the zlib one), slicing-by-8: every record is checked by every reader,
/// so this runs over the whole log when a watch starts from an old revision.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    static TABLES: [[u32; 256]; 8] = {
        let mut t = [[0u32; 256]; 8];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[0][i] = c;
            i += 1;
        }
        let mut i = 0;
        while i < 256 {
            let mut j = 1;
            while j < 8 {
                let prev = t[j - 1][i];
                t[j][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
                j += 1;
            }
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    let mut chunks = data.chunks_exact(8);
    for w in &mut chunks {
        let lo = c ^ u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        c = TABLES[7][(lo & 0xFF) as usize]
            ^ TABLES[6][((lo >> 8) & 0xFF) as usize]
            ^ TABLES[5][((lo >> 16) & 0xFF) as usize]
            ^ TABLES[4][(lo >> 24) as usize]
            ^ TABLES[3][w[4] as usize]
            ^ TABLES[2][w[5] as usize]
            ^ TABLES[1][w[6] as usize]
            ^ TABLES[0][w[7] as usize];
    }
    for &b in chunks.remainder() {
        c = TABLES[0][((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// The revision a watch must start after, checked against a log's compaction point.
pub(crate) fn check_not_compacted(after: u64, base: u64) -> Result<(), Error> {
    if after < base {
        return Err(Error::TooOld {
            requested: Revision(after),
            oldest: Revision(base),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_zlib_check_value() {
        // The standard check value: CRC-32 of "123456789" (zlib's crc32, Python's
        // `zlib.crc32(b"123456789")`).
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        // Longer than one 8-byte slice, with a remainder: zlib.crc32(b"The quick brown fox
        // jumps over the lazy dog") == 0x414FA339.
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    fn sample(revision: u64, namespace: Option<&str>) -> Record {
        Record {
            revision,
            op: Op::Modified,
            key: Key {
                kind: Kind::WorkloadEndpoint,
                namespace: namespace.map(str::to_string),
                name: "n1-k8s-pod-eth0".into(),
            },
            json: br#"{"kind":"WorkloadEndpoint"}"#.to_vec(),
        }
    }

    #[test]
    fn records_round_trip() {
        for ns in [None, Some(""), Some("default")] {
            let r = sample(42, ns);
            let framed = r.encode();
            let body_len = u32::from_le_bytes(framed[0..4].try_into().unwrap()) as usize;
            assert_eq!(body_len + FRAME_LEN, framed.len());
            assert_eq!(Record::decode_body(&framed[FRAME_LEN..]), Some(r));
        }
    }

    fn temp_log(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("tabby-log-test-{}-{}", std::process::id(), name));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn reader_stops_at_a_torn_tail_and_flags_corruption_in_the_middle() {
        let mut bytes = encode_header(7).to_vec();
        bytes.extend(sample(8, None).encode());
        let good_end = bytes.len() as u64;
        let torn = sample(9, Some("ns")).encode();
        bytes.extend(&torn[..torn.len() - 3]);
        let path = temp_log("torn", &bytes);
        let mut reader = LogReader::open(&path).unwrap();
        assert_eq!(reader.base, 7);
        let mut seen = vec![];
        let tail = reader
            .read_new(0, |_, r| {
                seen.push(r.revision);
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, vec![8]);
        assert_eq!(tail, Tail::Torn { at: good_end });
        assert_eq!(reader.offset, good_end);

        // A damaged record followed by a good one is corruption, not a crash.
        let mut bytes = encode_header(0).to_vec();
        let mut bad = sample(1, None).encode();
        let last = bad.len() - 1;
        bad[last] ^= 0xFF;
        bytes.extend(bad);
        bytes.extend(sample(2, None).encode());
        std::fs::write(&path, &bytes).unwrap();
        let mut reader = LogReader::open(&path).unwrap();
        let tail = reader.read_new(0, |_, _| Ok(())).unwrap();
        assert_eq!(tail, Tail::Corrupt { at: HEADER_LEN });
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn reader_rejects_a_foreign_file() {
        let path = temp_log("foreign", b"not a log at all, definitely");
        assert!(matches!(LogReader::open(&path), Err(Error::Corrupt { .. })));
        std::fs::remove_file(&path).unwrap();
    }
}
