//! Compiles the fixed catalog of the `register` target: the demo services (`proto/demo/**`) and
//! the core tests' shop backend (`crates/core/tests/data/shop.proto`), the same backends the core
//! crate's compile tests use, each as an encoded `FileDescriptorSet` in `OUT_DIR`; and, for the
//! `wire` target, the core wire tests' messages (`wire.proto`, `wire2.proto`: every field shape).

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("..");
    let protos = root.join("proto");
    let shop_dir = root.join("crates/core/tests/data");
    println!("cargo:rerun-if-changed={}", protos.join("demo").display());
    println!("cargo:rerun-if-changed={}", shop_dir.join("shop.proto").display());
    println!("cargo:rerun-if-changed={}", shop_dir.join("wire.proto").display());
    println!("cargo:rerun-if-changed={}", shop_dir.join("wire2.proto").display());
    let demo = protox::compile(
        [
            "demo/user/v1/user.proto",
            "demo/asset/v1/asset.proto",
            "demo/notification/v1/notification.proto",
            "demo/broadcast/v1/broadcast.proto",
        ],
        [&protos],
    )?;
    let shop = protox::compile(["shop.proto"], [&shop_dir])?;
    let wire = protox::compile(["wire.proto", "wire2.proto"], [&shop_dir])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("demo.bin"), demo.encode_to_vec())?;
    fs::write(out.join("shop.bin"), shop.encode_to_vec())?;
    fs::write(out.join("wire.bin"), wire.encode_to_vec())?;
    Ok(())
}
