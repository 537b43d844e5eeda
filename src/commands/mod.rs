//! One module per subcommand.

pub mod bench;
pub mod bench_gpu;
pub mod chat;
pub mod compile;
pub mod executors;
pub mod inspect;
pub mod ir;
pub mod out_dir;
pub mod run;
pub mod serve;
pub mod textgen;

use std::path::PathBuf;

use anyhow::{bail, Result};
use gemma4c_frontend::gguf::GgufFile;
use gemma4c_frontend::Gemma4Config;

/// `--model DIR | --config FILE`: a checkpoint, or a config on its own.
#[derive(clap::Args)]
pub struct ModelOrConfig {
    /// Hugging Face checkpoint directory (tensor dtypes come from its safetensors), or a GGUF file.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A config.json on its own (weights typed by its `dtype`, bf16 if absent).
    #[arg(long, conflicts_with = "model")]
    pub config: Option<PathBuf>,
}

impl ModelOrConfig {
    /// The config, from `DIR/config.json`, a GGUF file's metadata, or the file.
    pub fn load_config(&self) -> Result<Gemma4Config> {
        if let Some(file) = self.model.as_ref().filter(|p| p.is_file() && GgufFile::sniff(p)) {
            return Ok(gemma4c_frontend::gguf::gemma::config(&GgufFile::open(file)?)?);
        }
        let path: PathBuf = match (&self.model, &self.config) {
            (Some(dir), None) => dir.join("config.json"),
            (None, Some(file)) => file.to_path_buf(),
            _ => bail!("give exactly one of --model DIR or --config FILE"),
        };
        Ok(Gemma4Config::from_file(&path)?)
    }
}

/// `--quant FORMAT` (see `gemma4c_frontend::quantize`).
pub fn parse_quant(s: &str) -> std::result::Result<gemma4c_ir::QuantFormat, String> {
    gemma4c_frontend::quantize::parse_quant(s)
}

/// `--quant FORMAT [--quant-embedding]` as one value.
pub fn quant_spec(
    format: Option<gemma4c_ir::QuantFormat>,
    embedding: bool,
) -> Option<gemma4c_frontend::quantize::QuantSpec> {
    format.map(|format| gemma4c_frontend::quantize::QuantSpec { format, embedding })
}

/// Opens a model and applies `--quant`, saying on stderr what was quantized.
pub fn open_model(
    path: &std::path::Path,
    quant: Option<gemma4c_frontend::quantize::QuantSpec>,
) -> Result<gemma4c_frontend::Model> {
    let mut model = gemma4c_frontend::Model::open(path)?;
    if let Some(spec) = quant {
        let q = spec.format;
        let report = model.quantize(spec)?;
        eprintln!(
            "gemma4c: --quant {q}: {} matmul weights quantized at load; kept as stored: {}",
            report.quantized.len(),
            kept_summary(&report)
        );
    }
    Ok(model)
}

/// `embedding table (tied LM head) x1, per-layer input (PLE) x3`, or `none`.
fn kept_summary(report: &gemma4c_frontend::quantize::QuantReport) -> String {
    let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
    for (_, why) in &report.kept {
        *reasons.entry(why.as_str()).or_default() += 1;
    }
    if reasons.is_empty() {
        return "none (besides embeddings and norms)".into();
    }
    let parts: Vec<String> = reasons.iter().map(|(w, n)| format!("{w} x{n}")).collect();
    format!("{} (and norms)", parts.join(", "))
}
