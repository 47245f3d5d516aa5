//! `herd`: the command line of the herd chatbot backend.
//!
//! `serve` (gateway + admin + workers in one process), `gateway`, `worker`, `admin serve`,
//! `admin create-key`, `migrate`, `chat` (a
//! terminal WhatsApp user for a running herd) and `engine …` (the engine checked directly).

mod chat;
mod engine_cmd;
mod loadgen;
mod policy_cmd;

use herd::{app, services};

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "herd", version, about = "herd: a Llama 4 chatbot backend for messaging platforms")]
struct Cli {
    /// Settings file (TOML); also HERD_CONFIG. Every key can be overridden by HERD__SECTION__KEY.
    #[arg(long, global = true, env = "HERD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Gateway and workers in one process (small setups, the demo).
    Serve,
    /// The webhook gateway only.
    Gateway,
    /// Workers only (one engine each).
    Worker,
    /// Apply the database migrations and seed the configured tenants, then exit.
    Migrate,
    /// Print the effective settings (file, then HERD__ variables) with secrets hidden; exits
    /// non-zero naming the key when they are invalid. Connects to nothing.
    Config,
    /// The admin API and dashboard: `serve` it, or `create-key`.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Chat in the terminal as a WhatsApp user of a running herd.
    Chat {
        /// Your WhatsApp number (wa_id).
        #[arg(long, default_value = "15550009999")]
        from: String,
    },
    /// Run the Llama 4 engine directly: logits, generate, chat, bench, info.
    Engine(engine_cmd::EngineArgs),
    /// The policy layer: eval (JSON lines), region, bench (XSTest).
    Policy(policy_cmd::PolicyArgs),
    /// Load generator for the ingest benchmark: signed WhatsApp webhooks, each a new message.
    Loadgen {
        /// Gateway base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long, default_value_t = 20_000)]
        requests: u64,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// App secret the bodies are signed with.
        #[arg(long, default_value = "demo-app-secret")]
        secret: String,
        /// WhatsApp phone_number_id of the channel.
        #[arg(long, default_value = "100000000000001")]
        phone_id: String,
        /// Hit the do-nothing /bare route (the baseline).
        #[arg(long)]
        bare: bool,
        /// Distinguishes message ids of separate runs.
        #[arg(long, default_value = "run")]
        run_id: String,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Serve the admin API and dashboard on `admin.listen`.
    Serve,
    /// Create an API key and print it (once: only its hash is stored).
    CreateKey {
        /// admin (everything) or analyst (analytics only).
        #[arg(long, value_parser = ["admin", "analyst"])]
        role: String,
        /// A name to tell the key apart.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// The analytics benchmark: seed synthetic messages into a separate database on the configured
    /// PostgreSQL server and time every analytics endpoint.
    Bench {
        /// Messages to seed (half inbound, half replies).
        #[arg(long, default_value_t = 1_000_000)]
        messages: i64,
        /// Requests per endpoint and scope.
        #[arg(long, default_value_t = 40)]
        requests: usize,
        /// Database to use (created when absent); never the one herd runs on.
        #[arg(long, default_value = "herd_bench")]
        database: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Engine(args) => engine_cmd::run(args),
        Command::Policy(args) => policy_cmd::run(args),
        Command::Config => services::settings(cli.config.as_deref()).map(|s| print!("{}", s.to_redacted_toml())),
        other => run_service(cli.config, other),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Builds the parts (everything checked and loaded), then serves them until Ctrl-C or SIGTERM.
async fn serve(settings: &herd_core::Settings, parts: app::Parts) -> anyhow::Result<()> {
    let stop = services::shutdown_signal();
    app::App::build(settings, parts, &stop).await?.run(stop).await
}

fn chrono_today() -> chrono::NaiveDate {
    chrono::Utc::now().date_naive()
}

fn run_service(config: Option<PathBuf>, command: Command) -> anyhow::Result<()> {
    herd_core::telemetry::init();
    herd_channels::send::install_crypto();
    let settings = services::settings(config.as_deref())?;
    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(async move {
        match command {
            Command::Chat { from } => chat::run(&settings, &from).await,
            Command::Loadgen { url, requests, concurrency, secret, phone_id, bare, run_id } => {
                loadgen::run(loadgen::Options { url, requests, concurrency, secret, phone_id, bare, run_id }).await
            }
            Command::Migrate => {
                let store = services::store(&settings).await?;
                // Refuse a broken pack or tenant policy here too, before anything runs with it.
                services::policy(&settings, &store, None).await?;
                eprintln!("migrations applied, tenants seeded, policy packs valid");
                Ok(())
            }
            Command::Admin(AdminCommand::CreateKey { role, name }) => {
                let store = services::store(&settings).await?;
                let role = herd_admin::auth::Role::parse(&role).ok_or_else(|| anyhow::anyhow!("--role must be admin or analyst"))?;
                let (id, key) =
                    herd_admin::auth::create_key(&store, &herd_admin::auth::cli_actor(), &name, role).await.map_err(anyhow::Error::msg)?;
                eprintln!("created {} key {id} ({name}); it is shown only now:", role.as_str());
                println!("{key}");
                Ok(())
            }
            Command::Admin(AdminCommand::Bench { messages, requests, database }) => {
                let mut s = settings.clone();
                s.database_url = services::database_on_same_server(&settings.database_url, &database).await?;
                let (store, queue) = (services::store(&s).await?, services::queue(&s).await?);
                let state = herd_admin::AppState::new(store, queue, u32::MAX);
                let report = herd_admin::bench::run(state, messages, requests, chrono_today()).await.map_err(anyhow::Error::msg)?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
            Command::Admin(AdminCommand::Serve) => serve(&settings, app::Parts { admin: true, ..Default::default() }).await,
            Command::Gateway => serve(&settings, app::Parts { gateway: true, ..Default::default() }).await,
            Command::Worker => serve(&settings, app::Parts { workers: true, worker_probes: true, ..Default::default() }).await,
            Command::Serve => serve(&settings, app::Parts { gateway: true, admin: true, workers: true, worker_probes: false }).await,
            Command::Engine(_) | Command::Policy(_) | Command::Config => anyhow::bail!("not a service command"),
        }
    });
    herd_core::telemetry::flush();
    result
}
