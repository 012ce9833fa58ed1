//! Compiles the .proto schemas with protox (a pure-Rust compiler), so building
//! needs no `protoc` binary, then generates prost messages and the tonic service.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/fulcrum/v1/envelope.proto",
        "proto/fulcrum/v1/offer.proto",
        "proto/fulcrum/v1/negotiation.proto",
        "proto/fulcrum/v1/log.proto",
        "proto/fulcrum/v1/membership.proto",
        "proto/fulcrum/v1/admin.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
