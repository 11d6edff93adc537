//! Compiles the control API's proto with protox (pure Rust): no system
//! protoc. Also writes the encoded descriptor set that server reflection
//! serves, imports included, so any gRPC tool can discover every RPC.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::Compiler::new(["proto"])?
        .include_imports(true)
        .include_source_info(false)
        .open_files(["simulcast/v1/simulcast.proto"])?
        .file_descriptor_set();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("simulcast_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
