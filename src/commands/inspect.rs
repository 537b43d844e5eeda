use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    source: super::ModelOrConfig,
}

pub fn run(args: Args) -> Result<()> {
    let cfg = args.source.load_config()?;
    print!("{}", gemma4c_frontend::summary::render(&cfg)?);
    Ok(())
}
