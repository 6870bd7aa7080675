//! Bakes the libtorch library folder into the binaries' RUNPATH, so that
//! `rir-train` runs without LD_LIBRARY_PATH. torch-sys's own link arguments
//! do not reach dependents; `DEP_TCH_LIBTORCH_LIB` is what it exports for that.
//! LD_LIBRARY_PATH still wins at run time, which is how a binary built here
//! runs against another libtorch 2.11 (a GPU host's python torch).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-env=RIR_LIBTORCH_LIB={lib}");
    } else {
        println!("cargo:rustc-env=RIR_LIBTORCH_LIB=");
    }
}
