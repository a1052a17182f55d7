//! The whole `corral` command line, with the `inventory-json` adapter of
//! this crate registered next to the built-in ones:
//!
//! ```sh
//! cargo run -p corral-example-external-adapter -- adapters
//! cargo run -p corral-example-external-adapter -- sync -c my-corral.toml
//! ```

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    corral::main_with(corral_example_external_adapter::register)
}
