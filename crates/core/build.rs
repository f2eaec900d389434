//! Generates the `nexus.v1` message types and the descriptor set the document parser reflects on.

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_root.join("nexus").display());
    let fds = protox::compile(["nexus/v1/nexus.proto"], [&proto_root])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("nexus_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_client(false).build_server(false).compile_fds(fds)?;
    Ok(())
}
