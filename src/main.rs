//! The `gatehouse` binary: the command line of [`gatehouse::cli`].

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    gatehouse::cli::run(clap::Parser::parse())
}
