//! `gemma4c`: compile and run Google's Gemma 4 models.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "gemma4c", version, about = "A compiler for Google's Gemma 4 language models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Config summary, layer table, parameter count and bytes per decoded token.
    Inspect(commands::inspect::Args),
    /// Print the IR of the decode step (or a prefill of S tokens).
    Ir(commands::ir::Args),
    /// Generate text or token ids from a checkpoint or a compiled plan.
    Run(commands::run::Args),
    /// Talk to an instruction-tuned checkpoint, one turn after another.
    Chat(commands::chat::Args),
    /// An OpenAI-compatible HTTP server (chat and text completions, streaming).
    Serve(commands::serve::Args),
    /// Compile a checkpoint (or config) for a target into an artifact directory.
    Compile(commands::compile::Args),
    /// Measure prefill/decode speed of the JIT executor against memory bandwidth.
    Bench(commands::bench::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Ir(a) => commands::ir::run(a),
        Command::Run(a) => commands::run::run(a),
        Command::Chat(a) => commands::chat::run(a),
        Command::Serve(a) => commands::serve::run(a),
        Command::Compile(a) => commands::compile::run(a),
        Command::Bench(a) => commands::bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
