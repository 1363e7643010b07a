//! The `fucina` command line: a thin layer over the crates.

mod bench;
mod cli;
mod export;
mod launch;

fn main() -> std::process::ExitCode {
    fucina_train::alloc::keep_freed_memory();
    match cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
