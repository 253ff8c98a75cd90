//! The `bouncer` binary: read `.env` and the command line, then run.

/// mimalloc instead of glibc's allocator, built so that it does not ask
/// Linux for transparent huge pages (`no_thp`): with them it `madvise`s
/// its memory for 2 MiB pages, and peak memory under load rose from 33 to
/// 58 MiB; without, to 39 MiB. It keeps freed pages for a moment instead
/// of handing them back at once, which is where its gain comes from: on
/// SQLite the server's CPU a message fell by about a tenth, and a spool's
/// intake and recovery ran faster (BENCHMARKS.md, "The allocator again").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    refuse_huge_pages();
    bouncer::memory::set_give_back(give_back);
    bouncer::cli::main()
}

/// mimalloc's own collection, forced: the calling thread's free pages,
/// and the free memory mimalloc shares between threads, go back to the
/// system now, not when the delay runs out and a thread next allocates
/// (see `bouncer::memory`). Memory freed on other threads' heaps (sqlx's
/// SQLite threads, for one) and SQLite's own, which is glibc's, stay.
fn give_back() {
    // SAFETY: `mi_collect` takes no pointers; it works on mimalloc's own
    // structures, with the locking mimalloc does for any call, and is
    // documented as callable from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Where the kernel gives huge pages without being asked (THP `always`,
/// the default of some distributions), mimalloc's large aligned regions
/// would be backed by them anyway and the figures above would not hold:
/// the process opts out. Memory already mapped is covered too, since the
/// kernel checks the flag when a page is first touched.
fn refuse_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes no pointers and changes only this
    // process's huge-page flag. A kernel without it refuses; nothing else
    // depends on the outcome.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
