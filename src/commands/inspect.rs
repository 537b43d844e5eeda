use std::path::PathBuf;

use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// Hugging Face checkpoint directory (reads its config.json).
    #[arg(long)]
    model: Option<PathBuf>,
    /// A config.json on its own.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let cfg = super::load_config(args.model.as_deref(), args.config.as_deref())?;
    print!("{}", gemma4c_frontend::summary::render(&cfg)?);
    Ok(())
}
