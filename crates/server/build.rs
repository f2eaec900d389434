//! Generates the NexusService server and client over the message types of `nexus-core`, and
//! rebuilds the crate when the embedded UI bundle (`ui/dist`, see `src/ui.rs`) changes.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_root.join("nexus").display());
    // include_dir! does not tell cargo which files it read.
    println!("cargo:rerun-if-changed={}", proto_root.join("../ui/dist").display());
    let fds = protox::compile(["nexus/v1/nexus.proto"], [&proto_root])?;
    // Requests that are not valid protobuf are INVALID_ARGUMENT (src/codec.rs), not INTERNAL.
    tonic_prost_build::configure()
        .extern_path(".nexus.v1", "::nexus_core::pb")
        .codec_path("crate::codec::NexusCodec")
        .compile_fds(fds)?;
    Ok(())
}
