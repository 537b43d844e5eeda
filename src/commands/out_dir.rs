//! Atomic artifact directories: `compile --out OUT` writes into a fresh
//! sibling directory, records every file's hash in `manifest.json`, and only
//! then renames it to OUT. Concurrent compiles to the same OUT therefore never
//! mix their files: OUT is always one compile's complete output.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use gemma4c_runtime::artifact::{Manifest, MANIFEST_FILE, PLAN_FILE};

pub struct Staging {
    tmp: PathBuf,
    out: PathBuf,
    done: bool,
}

/// A unique name next to `out`, e.g. `.OUT.tmp-1234-5`.
fn sibling(out: &Path, what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = out
        .file_name()
        .map_or("out".into(), |n| n.to_string_lossy().into_owned());
    let n = N.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    out.with_file_name(format!(".{name}.{what}-{}-{n}-{nanos}", std::process::id()))
}

/// OUT may be replaced only if it is missing, empty, or a previous artifact.
fn replaceable(out: &Path) -> Result<()> {
    let Ok(meta) = out.symlink_metadata() else {
        return Ok(());
    };
    if !meta.is_dir() {
        bail!("--out {}: exists and is not a directory", out.display());
    }
    let empty = std::fs::read_dir(out)
        .with_context(|| format!("reading --out {}", out.display()))?
        .next()
        .is_none();
    if !empty && !out.join(PLAN_FILE).exists() && !out.join(MANIFEST_FILE).exists() {
        bail!(
            "--out {}: a non-empty directory that is not a gemma4c artifact (no plan.json); \
             compile replaces OUT as a whole, so give a new or artifact directory",
            out.display()
        );
    }
    Ok(())
}

impl Staging {
    pub fn new(out: &Path) -> Result<Staging> {
        if out.as_os_str().is_empty() || out.file_name().is_none() {
            bail!("--out `{}` must name a directory", out.display());
        }
        replaceable(out)?;
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let tmp = sibling(out, "tmp");
        std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(Staging {
            tmp,
            out: out.to_path_buf(),
            done: false,
        })
    }

    /// Where to write the files.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Writes the manifest and moves the directory to OUT (replacing a previous artifact).
    pub fn commit(mut self) -> Result<()> {
        let mut files = Vec::new();
        for e in std::fs::read_dir(&self.tmp).with_context(|| format!("reading {}", self.tmp.display()))? {
            let e = e?;
            if e.file_type()?.is_file() {
                let name = e.file_name().to_string_lossy().into_owned();
                let bytes = std::fs::read(e.path()).with_context(|| format!("reading {}", e.path().display()))?;
                files.push((name, bytes));
            }
        }
        files.sort();
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        let manifest = self.tmp.join(MANIFEST_FILE);
        std::fs::write(&manifest, Manifest::of(&refs).to_json())
            .with_context(|| format!("writing {}", manifest.display()))?;
        // Another compile may put its OUT in place between our two renames;
        // then move that one aside too. Each attempt leaves OUT complete.
        for _ in 0..100 {
            match std::fs::rename(&self.tmp, &self.out) {
                Ok(()) => {
                    self.done = true;
                    return Ok(());
                }
                Err(_) if self.out.symlink_metadata().is_ok() => {
                    replaceable(&self.out)?;
                    let old = sibling(&self.out, "old");
                    if std::fs::rename(&self.out, &old).is_ok() {
                        let _ = std::fs::remove_dir_all(&old);
                    }
                }
                Err(e) => return Err(e).with_context(|| format!("moving the artifact to {}", self.out.display())),
            }
        }
        bail!("--out {}: other processes keep replacing it", self.out.display())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}
