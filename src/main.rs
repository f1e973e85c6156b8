//! The `ldae` binary: parse the command line and hand over to [`ldae::cli::run`].

fn main() -> std::process::ExitCode {
    ldae::cli::main()
}
