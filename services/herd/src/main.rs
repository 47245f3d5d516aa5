//! `herd`: the command line of the herd chatbot backend.
//!
//! Today it carries the engine tools (`herd engine …`); the services (`serve`, `gateway`,
//! `worker`, `admin`, `migrate`) join as they are built.

mod engine_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "herd", version, about = "herd: a Llama 4 chatbot backend for messaging platforms")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Llama 4 engine directly: logits, generate, chat, bench, info.
    Engine(engine_cmd::EngineArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Engine(args) => engine_cmd::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
