//! The `corral` binary: the command line of the `corral` library with the
//! adapters of this build (see `src/lib.rs`).

use std::process::ExitCode;

/// mimalloc rather than the system allocator: with the glibc allocator the big
/// page buffers (several MB each) leave per-thread arenas fragmented, and the
/// process holds on to far more memory than the pipeline has in flight
/// (benches/s1_crowdstrike.rs measures it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    corral::main_with(|_| {})
}
