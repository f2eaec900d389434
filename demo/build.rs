//! Compiles the demo protos with protox (no protoc on build machines) into tonic server and client
//! code, and writes the encoded descriptor set that backs gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: [&str; 4] = [
    "demo/user/v1/user.proto",
    "demo/asset/v1/asset.proto",
    "demo/notification/v1/notification.proto",
    "demo/broadcast/v1/broadcast.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Only the demo protos feed this crate; watching all of ../proto would rebuild the demo
    // whenever the nexus API protos change.
    println!("cargo:rerun-if-changed=../proto/demo");
    println!("cargo:rerun-if-changed=build.rs");

    // `compile` includes imports (google/protobuf/timestamp.proto) and source info, so the
    // reflection service can resolve every dependency and show comments.
    let fds = protox::compile(PROTOS, ["../proto"])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("demo_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
