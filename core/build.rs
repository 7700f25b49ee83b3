//! Compiles `proto/cohort.proto` with the pure-Rust `protox` compiler, so no `protoc` is needed.
use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=proto/cohort.proto");
    let descriptors = protox::compile(["proto/cohort.proto"], ["proto"])?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(descriptors)?;
    Ok(())
}
