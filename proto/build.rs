//! Generates the message types and the tonic client and server code of
//! `inference.proto` (which imports `model_config.proto`) and `rir.proto`,
//! with a vendored protoc (no system package needed), plus the descriptor
//! set served by gRPC reflection and read by the `config.pbtxt` parser.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("rir_descriptor.bin"))
        // Requests are checked on their wire bytes before prost decodes
        // them (src/wire.rs).
        .codec_path("crate::wire::GuardedCodec")
        .compile_protos(&["inference.proto", "rir.proto"], &["."])?;
    for file in ["inference.proto", "model_config.proto", "rir.proto"] {
        println!("cargo:rerun-if-changed={file}");
    }
    Ok(())
}
