use anyhow::{bail, Result};
use gemma4c_frontend::{build, BuildOptions, Model};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: super::ModelOrConfig,
    /// Print the prefill graph of S tokens instead of the decode step.
    #[arg(long, value_name = "S")]
    prefill: Option<usize>,
    /// Context length the KV caches are sized for (default: max_position_embeddings).
    #[arg(long)]
    max_context: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    let seq_len = args.prefill.unwrap_or(1);
    if seq_len == 0 {
        bail!("--prefill must be at least 1");
    }
    let graph = match (&args.source.model, &args.source.config) {
        (Some(dir), None) => {
            let model = Model::open(dir)?;
            let opts = options(&model.config, seq_len, args.max_context)?;
            model.graph(&opts)?
        }
        (None, Some(_)) => {
            let cfg = args.source.load_config()?;
            let opts = options(&cfg, seq_len, args.max_context)?;
            build(&cfg, &opts, &|_| cfg.dtype)?
        }
        _ => bail!("give exactly one of --model DIR or --config FILE"),
    };
    print!("{}", gemma4c_ir::print(&graph));
    Ok(())
}

fn options(cfg: &gemma4c_frontend::Gemma4Config, seq_len: usize, max_context: Option<usize>) -> Result<BuildOptions> {
    let ctx = max_context.unwrap_or(cfg.max_position_embeddings);
    if ctx == 0 || ctx > cfg.max_position_embeddings {
        bail!(
            "--max-context {ctx} must be in 1..={} (max_position_embeddings in {})",
            cfg.max_position_embeddings,
            cfg.path.display()
        );
    }
    if seq_len > ctx {
        bail!("--prefill {seq_len} is longer than the context of {ctx} tokens");
    }
    Ok(BuildOptions::new(cfg, seq_len, ctx, seq_len))
}
