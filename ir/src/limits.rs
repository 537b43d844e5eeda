//! Limits on what untrusted inputs may make gemma4c read or allocate.
//!
//! Every size derived from a config, a plan or a flag is computed with checked
//! arithmetic and compared with what the machine could hold *before* anything
//! is allocated, and every JSON input is read from a regular file with a bound,
//! so a hostile input gives an error instead of an abort, a hang on a FIFO or a
//! read of `/dev/zero` until memory runs out.

use std::io::Read;
use std::path::Path;

/// Largest JSON input read (config.json, the shard index, plan.json,
/// tokenizer.json): real ones are at most tens of MB.
pub const MAX_JSON_BYTES: u64 = 256 << 20;

/// Physical memory of this machine in bytes (`MemTotal` of /proc/meminfo), or
/// 1 TiB where that cannot be read.
pub fn host_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kb.checked_mul(1024)
        })
        .unwrap_or(1 << 40)
}

/// Bytes of `numel(shape)` elements of `elem_bytes` each, or `None` on overflow.
pub fn tensor_bytes(shape: &[usize], elem_bytes: usize) -> Option<usize> {
    shape.iter().try_fold(elem_bytes, |acc, &d| acc.checked_mul(d))
}

/// Checks that `bytes` (described by `what`) fit in this machine's memory.
pub fn check_fits(what: &str, bytes: usize) -> Result<(), String> {
    let limit = host_memory_bytes();
    if bytes as u64 > limit {
        return Err(format!(
            "{what} would need {} but this machine has {} of memory",
            human_bytes(bytes as u64),
            human_bytes(limit)
        ));
    }
    Ok(())
}

/// `1.5 GiB`, `64 KiB`, `12 B`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Checks that `path` is a regular file (following symlinks), so opening it
/// cannot block (a FIFO) and reading it ends (a device). Symlink loops and
/// missing files come back as the OS error.
pub fn check_regular_file(path: &Path) -> Result<std::fs::Metadata, String> {
    let meta = std::fs::metadata(path).map_err(|e| match e.raw_os_error() {
        Some(40) => "a symlink loop (too many levels of symbolic links)".to_string(),
        _ => e.to_string(),
    })?;
    if !meta.is_file() {
        let kind = file_kind(&meta);
        return Err(format!("not a regular file ({kind})"));
    }
    Ok(meta)
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Reads a regular file of at most `limit` bytes as UTF-8 text. The message
/// of the error does not repeat the path (callers name it).
pub fn read_text(path: &Path, limit: u64) -> Result<String, String> {
    let meta = check_regular_file(path)?;
    if meta.len() > limit {
        return Err(format!(
            "{} is larger than the {} this input may have",
            human_bytes(meta.len()),
            human_bytes(limit)
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    // The file may grow after the check: never read more than the bound.
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read as UTF-8 text: {e}"))?;
    if text.len() as u64 > limit {
        return Err(format!("larger than the {} this input may have", human_bytes(limit)));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_bytes_overflow_is_none() {
        assert_eq!(tensor_bytes(&[2, 3], 4), Some(24));
        assert_eq!(tensor_bytes(&[], 2), Some(2));
        assert_eq!(tensor_bytes(&[1 << 40, 1 << 40], 4), None);
    }

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }

    #[test]
    fn special_files_are_refused() {
        assert!(check_regular_file(Path::new("/dev/zero"))
            .unwrap_err()
            .contains("character device"));
        assert!(check_regular_file(Path::new("/")).unwrap_err().contains("directory"));
    }
}
