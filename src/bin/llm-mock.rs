//! `llm-mock`: the mock OpenAI-compatible upstream used by tests and benchmarks.
//! Prints `LISTENING <port>` on stdout once bound.

use clap::Parser;
use std::io::Write;

#[derive(Parser)]
#[command(
    name = "llm-mock",
    about = "Mock OpenAI-compatible upstream for tests and benchmarks"
)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// 0 picks a free port.
    #[arg(long, default_value_t = 0)]
    port: u16,
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

fn main() -> std::io::Result<()> {
    let cli = Cli::parse();
    actix_web::rt::System::new().block_on(llm::mock_upstream::serve(
        &cli.host,
        cli.port,
        cli.workers,
        |port| {
            println!("LISTENING {port}");
            let _ = std::io::stdout().flush();
        },
    ))
}
