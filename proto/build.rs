//! Compiles `proto/gossip.proto` with protox (pure Rust, no system `protoc`).
//! The tonic service is generated only with the `grpc` feature, so crates
//! that need only the messages (gossip-core) never depend on tonic.

/// Messages that carry a secret (a keyring key, issue #12): no derived
/// `Debug`; `src/lib.rs` writes one that hides it, so a key cannot reach a
/// log line through `{:?}`.
const REDACTED: &str = ".gossip.v1.KeyringRequest";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/gossip.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    if std::env::var_os("CARGO_FEATURE_GRPC").is_some() {
        tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .bytes(".")
            .skip_debug([REDACTED])
            .compile_fds(fds)?;
    } else {
        prost_build::Config::new()
            .bytes(["."])
            .skip_debug([REDACTED])
            .compile_fds(fds)?;
    }
    Ok(())
}
