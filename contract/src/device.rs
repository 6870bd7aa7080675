//! Where models compute: `--device auto|cpu|cuda`.
//!
//! One [`Device`] type serves every binary (`rir-train`, `rir-export`,
//! `rir-serve`, the benches), so `--device auto|cpu|cuda` means the same
//! thing everywhere: `auto` takes CUDA when it can be had and says so, and
//! falls back to the CPU with the reason in the log.

use serde::{Deserialize, Serialize};

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Device {
    /// CUDA when it can be had, else the CPU (with the reason logged).
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA device; an error when there is none.
    Cuda,
}

impl Device {
    /// The name as given on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }

    /// Resolves a choice given whether CUDA can be had (`Err` holds why
    /// not): `Ok(true)` to use CUDA, `Ok(false)` for the CPU, `Err` when
    /// CUDA was demanded and cannot be had. Both the trainer (libtorch) and
    /// the engines (ONNX Runtime) decide through this one function.
    pub fn resolve(self, cuda: Result<(), NoCuda>) -> Result<bool, CudaRequired> {
        match (self, cuda) {
            (Device::Cpu, _) => Ok(false),
            (_, Ok(())) => Ok(true),
            (Device::Cuda, Err(why)) => Err(CudaRequired(why)),
            (Device::Auto, Err(why)) => {
                tracing::info!("using the CPU: {why}");
                Ok(false)
            }
        }
    }
}

/// Why CUDA cannot be had here, in words for the user (no driver, a
/// library without the CUDA provider, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoCuda(pub String);

/// `--device cuda` was given and CUDA cannot be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--device cuda: {0}")]
pub struct CudaRequired(pub NoCuda);

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_never_touches_cuda() {
        assert_eq!(Device::Cpu.resolve(Ok(())), Ok(false));
        assert_eq!(Device::Cpu.resolve(Err(NoCuda("none".into()))), Ok(false));
    }

    #[test]
    fn auto_takes_cuda_when_it_can_and_falls_back_otherwise() {
        assert_eq!(Device::Auto.resolve(Ok(())), Ok(true));
        assert_eq!(
            Device::Auto.resolve(Err(NoCuda("no driver".into()))),
            Ok(false)
        );
    }

    #[test]
    fn cuda_fails_with_the_reason() {
        assert_eq!(Device::Cuda.resolve(Ok(())), Ok(true));
        let err = Device::Cuda
            .resolve(Err(NoCuda("no driver".into())))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "--device cuda: no driver");
    }
}
