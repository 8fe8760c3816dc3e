//! Compiles `proto/gossip.proto` with protox (pure Rust, no system `protoc`).
//! The tonic service is generated only with the `grpc` feature, so crates
//! that need only the messages (gossip-core) never depend on tonic.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/gossip.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    if std::env::var_os("CARGO_FEATURE_GRPC").is_some() {
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .bytes(".")
            .compile_fds(fds)?;
    } else {
        prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    }
    Ok(())
}
