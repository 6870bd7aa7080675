//! Bakes the ONNX Runtime library path that `scripts/setup.sh` installed
//! (RIR_ORT_DYLIB) into the crate, as the last fallback of the run-time search.
fn main() {
    println!("cargo:rerun-if-env-changed=RIR_ORT_DYLIB");
    let path = std::env::var("RIR_ORT_DYLIB").unwrap_or_default();
    println!("cargo:rustc-env=RIR_ORT_DYLIB_BAKED={path}");
}
