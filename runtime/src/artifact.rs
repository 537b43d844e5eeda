//! Reading a compiled artifact directory (`gemma4c compile --out OUT`).
//!
//! `compile` records the SHA-256 of every file it writes in `manifest.json`;
//! loading checks `plan.json` and the kernels file against it, so a plan never
//! runs with kernels it was not compiled with (an edited, stale or truncated
//! file is an error, not wrong tokens). The plan is then validated as a whole
//! (`Plan::check`) before any memory is allocated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gemma4c_ir::limits::{check_regular_file, human_bytes, MAX_JSON_BYTES};
use gemma4c_passes::plan::Plan;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::RuntimeError;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const PLAN_FILE: &str = "plan.json";

/// Largest kernels file read (generated kernels of real models are a few MB).
pub const MAX_KERNELS_BYTES: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// File name → lowercase hex SHA-256 of its contents.
    pub sha256: BTreeMap<String, String>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl Manifest {
    /// The manifest of `files` (name, contents), as `compile` writes it.
    pub fn of(files: &[(&str, &[u8])]) -> Manifest {
        Manifest {
            sha256: files.iter().map(|(n, b)| (n.to_string(), sha256_hex(b))).collect(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("manifests serialize") + "\n"
    }
}

/// A loaded artifact directory: its manifest and its validated plan.
pub struct Artifact {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub plan: Plan,
}

fn err(path: &Path, m: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Request(format!("{}: {m}", path.display()))
}

/// Reads a regular file of at most `limit` bytes.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, RuntimeError> {
    use std::io::Read;
    let meta = check_regular_file(path).map_err(|m| err(path, m))?;
    if meta.len() > limit {
        return Err(err(
            path,
            format!(
                "{} is more than the {} allowed",
                human_bytes(meta.len()),
                human_bytes(limit)
            ),
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .map_err(|e| err(path, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > limit {
        return Err(err(path, format!("more than the {} allowed", human_bytes(limit))));
    }
    Ok(bytes)
}

impl Artifact {
    /// Reads `dir/manifest.json` and `dir/plan.json`, checks the plan's hash
    /// and validates the plan.
    pub fn open(dir: &Path) -> Result<Artifact, RuntimeError> {
        if !dir.is_dir() {
            return Err(err(
                dir,
                "not a directory (expected the --out directory of `gemma4c compile`)",
            ));
        }
        let mpath = dir.join(MANIFEST_FILE);
        let mbytes = read_bounded(&mpath, MAX_JSON_BYTES).map_err(|e| {
            RuntimeError::Request(format!(
                "{e} (a plan directory carries the hashes of its files: recompile it with this gemma4c)"
            ))
        })?;
        let manifest: Manifest =
            serde_json::from_slice(&mbytes).map_err(|e| err(&mpath, format!("not a gemma4c manifest: {e}")))?;
        let ppath = dir.join(PLAN_FILE);
        let text = read_checked(dir, &manifest, PLAN_FILE, MAX_JSON_BYTES)?;
        let plan: Plan =
            serde_json::from_slice(&text).map_err(|e| err(&ppath, format!("not a valid gemma4c plan: {e}")))?;
        crate::plan_session::check_plan(&plan).map_err(|e| err(&ppath, e))?;
        Ok(Artifact {
            dir: dir.to_path_buf(),
            manifest,
            plan,
        })
    }

    /// Whether the manifest lists `name`.
    pub fn has(&self, name: &str) -> bool {
        self.manifest.sha256.contains_key(name)
    }

    /// The contents of `name`, after checking them against the manifest.
    pub fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>, RuntimeError> {
        read_checked(&self.dir, &self.manifest, name, limit)
    }

    /// `name` as text (checked against the manifest).
    pub fn read_text(&self, name: &str, limit: u64) -> Result<String, RuntimeError> {
        String::from_utf8(self.read(name, limit)?).map_err(|_| err(&self.dir.join(name), "not UTF-8 text"))
    }
}

/// `dir/name`, bounded, with the SHA-256 the manifest records.
fn read_checked(dir: &Path, manifest: &Manifest, name: &str, limit: u64) -> Result<Vec<u8>, RuntimeError> {
    let path = dir.join(name);
    let want = manifest.sha256.get(name).ok_or_else(|| {
        err(
            &path,
            format!("not listed in {MANIFEST_FILE}: it was not written by the compile that wrote this plan"),
        )
    })?;
    let bytes = read_bounded(&path, limit)?;
    let got = sha256_hex(&bytes);
    if &got != want {
        return Err(err(
            &path,
            format!(
                "contents changed since compile (SHA-256 {got}, {MANIFEST_FILE} records {want}): recompile the plan"
            ),
        ));
    }
    Ok(bytes)
}
