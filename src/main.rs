//! The `bouncer` binary: read `.env` and the command line, then run.

fn main() -> std::process::ExitCode {
    bouncer::cli::main()
}
