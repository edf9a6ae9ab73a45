//! The `spool` binary: all the work is in the library.

fn main() -> std::process::ExitCode {
    eventspool::cli::main()
}
