//! The `state` file: the lock every process takes, and a 64-byte record of how far the object
//! files have caught up with the log.
//!
//! ```text
//! applied revision u64 LE | log base u64 LE | log offset u64 LE
//!   | boot id (36 bytes, /proc/sys/kernel/random/boot_id) | crc32 u32 LE
//! ```
//!
//! The object files hold the store's state as of the applied revision; the log records after
//! it complete the picture (see the module docs of [`super`]). A writer that applies the log to
//! the object files stores the revision it got to here, after the files are in place, so a
//! writer killed halfway leaves `applied` where it was and the next one applies again. The boot
//! id tells a store last written before a reboot apart: after a power loss the page cache did
//! not survive, so object files, log and this file may have reached the disk in any order, and
//! nothing here is trusted: the whole log is reconciled with the objects.
//!
//! `log base` and `log offset` say where in which log (a log is identified by its compaction
//! point, which every compaction raises) the applied revision's record ends, so a process that
//! opens the store starts reading the log there instead of at its beginning.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::log::{crc32, read_full_at};

pub(crate) const LEN: usize = 64;
const BOOT_ID_LEN: usize = 36;

/// What the state file says, if it says anything readable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Applied {
    pub revision: u64,
    pub log_base: u64,
    pub log_offset: u64,
    pub boot_id: [u8; BOOT_ID_LEN],
}

/// This machine's boot id; all zeroes where the kernel does not expose one (then a reboot goes
/// unnoticed and only the tail after `applied` is replayed).
pub(crate) fn boot_id() -> [u8; BOOT_ID_LEN] {
    let mut id = [0u8; BOOT_ID_LEN];
    if let Ok(s) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        let s = s.trim().as_bytes();
        let n = s.len().min(BOOT_ID_LEN);
        id[..n].copy_from_slice(&s[..n]);
    }
    id
}

pub(crate) fn encode(applied: Applied) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[0..8].copy_from_slice(&applied.revision.to_le_bytes());
    b[8..16].copy_from_slice(&applied.log_base.to_le_bytes());
    b[16..24].copy_from_slice(&applied.log_offset.to_le_bytes());
    b[24..24 + BOOT_ID_LEN].copy_from_slice(&applied.boot_id);
    let crc = crc32(&b[..LEN - 4]);
    b[LEN - 4..].copy_from_slice(&crc.to_le_bytes());
    b
}

pub(crate) fn decode(b: &[u8]) -> Option<Applied> {
    if b.len() < LEN {
        return None;
    }
    let crc = u32::from_le_bytes(b[LEN - 4..LEN].try_into().ok()?);
    if crc32(&b[..LEN - 4]) != crc {
        return None;
    }
    Some(Applied {
        revision: u64::from_le_bytes(b[0..8].try_into().ok()?),
        log_base: u64::from_le_bytes(b[8..16].try_into().ok()?),
        log_offset: u64::from_le_bytes(b[16..24].try_into().ok()?),
        boot_id: b[24..24 + BOOT_ID_LEN].try_into().ok()?,
    })
}

pub(crate) fn read(file: &File) -> std::io::Result<Option<Applied>> {
    let mut b = [0u8; LEN];
    let n = read_full_at(file, &mut b, 0)?;
    Ok(decode(&b[..n]))
}

/// One `pwrite` of 64 bytes at offset 0: within one page, so a process killed at any instant
/// leaves either the old or the new record (and a torn one after a power loss fails the
/// checksum, which [`read`] reports as "unknown").
pub(crate) fn write(file: &File, applied: Applied) -> std::io::Result<()> {
    file.write_all_at(&encode(applied), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let a = Applied {
            revision: 1234,
            log_base: 1000,
            log_offset: 4096,
            boot_id: *b"0123456789abcdef0123456789abcdef0123",
        };
        let mut b = encode(a);
        assert_eq!(decode(&b), Some(a));
        assert_eq!(decode(&b[..20]), None);
        b[3] ^= 1;
        assert_eq!(decode(&b), None);
    }
}
