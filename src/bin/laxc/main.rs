//! The `laxc` command line: read a spec, compile it, print what was asked for. One module per
//! command; `common` holds what they share (spec reading, diagnostics, `--format`, `-o/--out`).

mod check;
mod common;
mod explain;
#[cfg(feature = "train")]
mod export;
#[cfg(feature = "train")]
mod generate;
mod graph;
mod import;
mod new;
mod plot;
#[cfg(feature = "train")]
mod train;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "laxc",
    version,
    about = "Declarative architecture compiler for low-rank training with Latent Crossing (LaX)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check specs and report shapes, parameters, FLOPs and memory (several: a comparison).
    Check(check::CheckArgs),
    /// Train a spec: its `train` section, overridden with `--set`.
    #[cfg(feature = "train")]
    Train(train::TrainArgs),
    /// Evaluate a checkpoint on the spec's validation data.
    #[cfg(feature = "train")]
    Eval(train::EvalArgs),
    /// Generate text from a language model: a run, a pretrained base (GGUF, HuggingFace).
    #[cfg(feature = "train")]
    Generate(generate::GenerateArgs),
    /// Export a trained LLaMA: a PEFT LoRA adapter, or a HuggingFace directory (merged).
    #[cfg(feature = "train")]
    Export(export::ExportArgs),
    /// Time training steps on synthetic batches (see BENCHMARKS.md).
    #[cfg(feature = "train")]
    Bench(train::BenchArgs),
    /// Draw one metric of several training runs on one chart, as PNG and SVG.
    Plot(plot::PlotArgs),
    /// Print the spec's IR as a Graphviz DOT graph (render with `dot -Tsvg`).
    Graph(graph::GraphArgs),
    /// Explain a diagnostic code (e.g. `laxc explain E0703`), with a wrong and a right example.
    Explain(explain::ExplainArgs),
    /// Write a commented starter spec for a model family.
    New(new::NewArgs),
    /// Write the spec of a pretrained LLaMA: a GGUF file or a HuggingFace directory.
    Import(import::ImportArgs),
    /// Print a shell completion script, e.g. `laxc completions bash > ~/.local/share/bash-completion/completions/laxc`.
    Completions { shell: clap_complete::Shell },
    /// Burn's collective orchestrator for `laxc train --nodes`, started by node rank 0; it
    /// ends when its standard input closes.
    #[cfg(feature = "train")]
    #[command(hide = true, name = "__orchestrator")]
    Orchestrator { port: u16 },
}

fn main() -> ExitCode {
    #[cfg(feature = "train")]
    laxc::train::allocator::keep_freed_memory();
    match Cli::parse().command {
        Command::Check(a) => check::run(a),
        Command::Graph(a) => graph::run(a),
        Command::Plot(a) => plot::run(a),
        Command::Explain(a) => explain::run(a),
        Command::New(a) => new::run(a),
        Command::Import(a) => import::run(a),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "laxc", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        #[cfg(feature = "train")]
        Command::Train(a) => train::run_train(a),
        #[cfg(feature = "train")]
        Command::Bench(a) => train::run_bench(a),
        #[cfg(feature = "train")]
        Command::Eval(a) => train::run_eval(a),
        #[cfg(feature = "train")]
        Command::Generate(a) => generate::run(a),
        #[cfg(feature = "train")]
        Command::Export(a) => export::run(a),
        #[cfg(feature = "train")]
        Command::Orchestrator { port } => {
            laxc::train::cluster::serve_orchestrator(port);
            ExitCode::SUCCESS
        }
    }
}
