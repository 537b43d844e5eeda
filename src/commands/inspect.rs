use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: super::ModelOrConfig,
    /// Show the weight formats as `run/compile --quant FORMAT` would load them.
    #[arg(long, value_name = "FORMAT", value_parser = super::parse_quant, requires = "model", conflicts_with = "config")]
    quant: Option<gemma4c_ir::QuantFormat>,
    /// With --quant, also quantize the token embedding (and so a tied LM head), as llama.cpp's
    /// files do; by default it stays as stored. The PLE table always stays.
    #[arg(long, requires = "quant")]
    quant_embedding: bool,
}

pub fn run(args: Args) -> Result<()> {
    let cfg = args.source.load_config()?;
    print!("{}", gemma4c_frontend::summary::render(&cfg)?);
    if let Some(path) = &args.source.model {
        let model = super::open_model(path, super::quant_spec(args.quant, args.quant_embedding))?;
        print!("{}", weight_formats(&model));
    }
    Ok(())
}

/// Each format with its tensor count and bytes, then every tensor's format:
/// which weights the kernels dequantize (GGUF block formats, `--quant`).
fn weight_formats(model: &gemma4c_frontend::Model) -> String {
    use std::collections::BTreeMap;
    use std::fmt::Write;
    let store = &model.checkpoint;
    let mut by_format: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut lines = String::new();
    for key in store.keys() {
        let Some(t) = store.get(key) else { continue };
        let bytes = t.dtype.bytes_for(&t.shape).unwrap_or(0);
        let e = by_format.entry(t.dtype.to_string()).or_default();
        e.0 += 1;
        e.1 += bytes;
        let _ = writeln!(lines, "  {:<5} {key} {:?}", t.dtype.to_string(), t.shape);
    }
    let mut out = String::from("\nweight formats:\n");
    for (f, (n, bytes)) in &by_format {
        let _ = writeln!(
            out,
            "  {f:<5} {n:>5} tensors  {}",
            gemma4c_ir::limits::human_bytes(*bytes as u64)
        );
    }
    out.push_str("tensors:\n");
    out.push_str(&lines);
    out
}
