//! The `trousseau` binary: everything lives in the library; `main` only
//! turns the outcome of [`trousseau::cli::run`] into an exit code.

fn main() {
    std::process::exit(trousseau::cli::run(std::env::args_os().skip(1).collect()));
}
