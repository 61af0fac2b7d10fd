//! `llm`: CLI -> Config::load -> actors::start -> HttpServer.

use clap::Parser;

/// mimalloc: the gateway allocates many small short-lived buffers per request; glibc's allocator spent
/// about a tenth of a worker's time on them under load (bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use llm::config::Config;
use llm::server::{self, ServerOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "llm", version, about = "An OpenAI-compatible LLM gateway")]
struct Cli {
    /// The YAML config file (model_list, llm_settings, router_settings, general_settings).
    #[arg(long, env = "LLM_CONFIG")]
    config: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 4000)]
    port: u16,
    /// HTTP worker threads (default: one per CPU core).
    #[arg(long = "num_workers", alias = "num-workers")]
    num_workers: Option<usize>,
    /// Debug-level logs.
    #[arg(long)]
    debug: bool,
    /// JSON logs (also `LLM_JSON_LOGS=1`).
    #[arg(long = "json-logs", alias = "json_logs")]
    json_logs: bool,
    /// Validate the config, print every problem, and exit (0 valid, 1 invalid).
    #[arg(long = "check-config", alias = "check_config")]
    check_config: bool,
}

fn init_logs(debug: bool, json: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// No transparent huge pages: mimalloc asks for them on its arenas, and each 2 MiB page a few small buffers
/// touch is then resident whole. Without them the gateway's resident memory at c=64 falls from about 67 MiB
/// to 40 MiB (idle 37 -> 21 MiB) at no measurable throughput cost (bench/README.md, "/metrics at scale").
/// Run as a constructor, before the first allocation, since the policy applies to page faults after it.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static NO_TRANSPARENT_HUGE_PAGES: extern "C" fn() = {
    extern "C" fn no_thp() {
        // SAFETY: prctl with integer arguments only changes this process's THP policy.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
    no_thp
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json =
        cli.json_logs || std::env::var("LLM_JSON_LOGS").is_ok_and(|v| v == "1" || v == "true");
    init_logs(cli.debug, json);

    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(1);
        }
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    if cli.check_config {
        println!(
            "config {} is valid: {} deployment(s), metrics {}",
            cli.config.display(),
            config.model_list.len(),
            if config.metrics.enabled { "on" } else { "off" }
        );
        return ExitCode::SUCCESS;
    }
    if !config.not_implemented.is_empty() {
        tracing::info!(keys = ?config.not_implemented, "config keys kept but not acted on yet");
    }
    if config.general.master_key.is_none() {
        tracing::warn!("no general_settings.master_key: the gateway is open, every request is admitted without a key");
    }
    let opts = ServerOptions {
        host: cli.host,
        port: cli.port,
        workers: cli.num_workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        }),
    };
    let result = actix_web::rt::System::new().block_on(server::run(config, opts));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("llm: cannot serve: {e}");
            ExitCode::from(1)
        }
    }
}
