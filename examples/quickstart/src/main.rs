//! The README example: a task, a worker and a producer in one binary.
//!
//! `cargo run -p quickstart -- worker -c 4` runs a worker; `cargo run -p quickstart -- send 2 3`
//! sends `add(2, 3)` and prints the result. Both take `--nats-url` / `CELERITY_NATS_URL`.

use std::process::ExitCode;
use std::time::Duration;

#[celerity::task]
async fn add(x: i64, y: i64) -> i64 {
    x + y
}

fn main() -> anyhow::Result<ExitCode> {
    let app = celerity::App::builder().task(add).build()?;
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("send") {
        return Ok(celerity::cli::main(app)); // `quickstart worker -Q default -c 4 --hostname w1`
    }
    let (x, y) = (
        args.get(2).map_or(Ok(2), |a| a.parse())?,
        args.get(3).map_or(Ok(3), |a| a.parse())?,
    );
    let url = std::env::var("CELERITY_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    tokio::runtime::Runtime::new()?.block_on(async {
        let client = app.client(&celerity::NatsConfig::new(url)).await?;
        let result = add.delay(&client, x, y).await?;
        println!("{x} + {y} = {}", result.get(Duration::from_secs(30)).await?);
        Ok(ExitCode::SUCCESS)
    })
}
