//! Choosing the compute device, including the CUDA-registration trap:
//! `libtorch_cuda.so` is not linked into our binaries, so libtorch only
//! sees CUDA once that library has been loaded with `RTLD_GLOBAL`, before
//! the first tensor is made.

use std::ffi::CString;

use rir_contract::device::{Device as DeviceChoice, NoCuda};
use tch::Device;

/// Loads `libtorch_cuda.so` globally so that libtorch registers CUDA.
/// Returns why it could not (a CPU-only libtorch, no driver, ...).
pub fn register_cuda() -> Result<(), NoCuda> {
    let mut last = String::new();
    let baked = env!("RIR_LIBTORCH_LIB");
    let mut candidates = vec!["libtorch_cuda.so".to_string()];
    if !baked.is_empty() {
        candidates.push(format!("{baked}/libtorch_cuda.so"));
    }
    for name in candidates {
        let c = CString::new(name.clone()).map_err(|e| NoCuda(e.to_string()))?;
        // SAFETY: dlopen with a valid C string; the handle is deliberately
        // never closed, the library must stay loaded for the process.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if !handle.is_null() {
            return Ok(());
        }
        // SAFETY: dlerror returns a thread-local C string or null.
        let err = unsafe { libc::dlerror() };
        if !err.is_null() {
            // SAFETY: non-null dlerror results are valid C strings.
            last = unsafe { std::ffi::CStr::from_ptr(err) }
                .to_string_lossy()
                .into_owned();
        }
    }
    Err(NoCuda(last))
}

/// Resolves the device; `Cuda` fails when CUDA cannot be had. The rule is
/// the one every binary follows ([`DeviceChoice::resolve`]).
pub fn select(choice: DeviceChoice) -> Result<Device, rir_contract::device::CudaRequired> {
    let cuda = if choice == DeviceChoice::Cpu {
        Err(NoCuda("not asked for".to_string()))
    } else {
        let registered = register_cuda();
        if tch::Cuda::is_available() {
            Ok(())
        } else {
            Err(NoCuda(match registered {
                Ok(()) => "libtorch_cuda.so loaded but no CUDA device is visible".to_string(),
                Err(e) => format!("libtorch_cuda.so could not be loaded ({e})"),
            }))
        }
    };
    let use_cuda = choice.resolve(cuda)?;
    let device = if use_cuda {
        Device::Cuda(0)
    } else {
        Device::Cpu
    };
    tracing::info!("training on {device:?}");
    Ok(device)
}

/// `rir-train info`: the libtorch build, whether its CUDA library loaded,
/// and the devices and threads it sees.
pub fn describe_build() -> String {
    let cuda = match register_cuda() {
        Ok(()) => "loaded".to_string(),
        Err(e) => format!("not loaded ({e})"),
    };
    format!(
        "libtorch lib:   {}\nlibtorch_cuda:  {cuda}\nCUDA available: {}\nCUDA devices:   {}\ncuDNN:          {}\nCPU threads:    {}",
        env!("RIR_LIBTORCH_LIB"),
        tch::Cuda::is_available(),
        tch::Cuda::device_count(),
        tch::Cuda::cudnn_is_available(),
        tch::get_num_threads()
    )
}
