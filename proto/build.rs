//! Generates the message types and the tonic client and server code of
//! `inference.proto` and `rir.proto`, with a vendored protoc (no system
//! package needed), plus the descriptor set served by gRPC reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("rir_descriptor.bin"))
        .compile_protos(&["inference.proto", "rir.proto"], &["."])?;
    println!("cargo:rerun-if-changed=inference.proto");
    println!("cargo:rerun-if-changed=rir.proto");
    Ok(())
}
