//! The golden tests link libtorch through the trainer; give them the same
//! RUNPATH the trainer's binaries get (see trainer/build.rs).
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
