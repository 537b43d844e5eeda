//! One module per subcommand.

pub mod bench;
pub mod compile;
pub mod inspect;
pub mod ir;
pub mod run;

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use gemma4c_frontend::Gemma4Config;

/// `--model DIR` or `--config FILE`: where a config comes from.
pub fn load_config(model: Option<&Path>, config: Option<&Path>) -> Result<Gemma4Config> {
    let path: PathBuf = match (model, config) {
        (Some(dir), None) => dir.join("config.json"),
        (None, Some(file)) => file.to_path_buf(),
        _ => bail!("give exactly one of --model DIR or --config FILE"),
    };
    Ok(Gemma4Config::from_file(&path)?)
}
