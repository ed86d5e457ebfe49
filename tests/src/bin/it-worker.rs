//! The worker binary of the integration tests: every test task, run through
//! `celerity::cli::main` exactly as a user's binary would.

use std::process::ExitCode;

fn main() -> ExitCode {
    match celerity_it::app() {
        Ok(app) => celerity::cli::main(app),
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
