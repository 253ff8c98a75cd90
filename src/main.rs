//! The `bouncer` binary: read `.env` and the command line, then run.

/// mimalloc instead of glibc's allocator, built without transparent huge
/// pages (`no_thp`): with them it asks Linux for 2 MiB pages, and peak
/// memory under load rose from 33 to 58 MiB; without, to 39 MiB. It keeps
/// freed pages for a moment instead of handing them back at once, which
/// is where its gain comes from: on SQLite the server's CPU a message fell
/// by about a tenth, and a spool's intake and recovery ran faster
/// (BENCHMARKS.md, "The allocator again").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    bouncer::cli::main()
}
