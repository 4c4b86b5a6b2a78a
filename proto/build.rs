//! Compiles every `auction/v1/*.proto` with protox (a pure-Rust protobuf
//! compiler), so a fresh clone builds without a `protoc` on the machine. The
//! encoded descriptor set is written next to the generated code because
//! server reflection serves it and `compile_fds` does not write one.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not with env!(): cargo reuses a compiled build script
    // across checkouts of the same workspace (its hash is path-independent),
    // and a path baked in at compile time would point at another checkout.
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.as_path();
    let contracts = root.join("auction").join("v1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&contracts)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "proto")
        })
        .collect();
    // A stable order keeps the descriptor set (and so the build) reproducible.
    files.sort();
    println!("cargo:rerun-if-changed={}", contracts.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let descriptors = protox::compile(&files, [root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("auction_descriptor.bin"),
        protox::prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
