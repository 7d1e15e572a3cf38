//! `--device cpu|cuda|cuda:N`: where a command keeps its weights and runs its tensors.
//!
//! The flag is parsed here, once, into a candle [`Device`]; the libraries below the CLI take that
//! `Device` and never choose one themselves. Data loading, tokenizing and batching stay on the
//! host; batches are sent to the device, and checkpoints are written from it (through the host)
//! and loaded onto it, so a run can be trained on one device and resumed or sampled on another.
//!
//! CUDA needs a binary built with `--features cuda` (`scripts/build-cuda.sh`); such a binary
//! opens the CUDA driver, cuBLAS and cuRAND at run time from the library path.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

/// A device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceArg {
    /// The CPU, with our fused kernels.
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl FromStr for DeviceArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("unknown device {s:?}: use cpu, cuda or cuda:N (N = 0, 1, ...)");
        match s {
            "cpu" => Ok(DeviceArg::Cpu),
            "cuda" => Ok(DeviceArg::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                    n.parse().map(DeviceArg::Cuda).map_err(|_| bad())
                }
                _ => Err(bad()),
            },
        }
    }
}

impl fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceArg::Cpu => f.write_str("cpu"),
            DeviceArg::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Why a device could not be opened. (A build makes only the variants of its kind: `NoCuda`
/// without the `cuda` feature, the others with it.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceError {
    /// CUDA was asked for, but this binary was built without the `cuda` feature.
    #[cfg_attr(feature = "cuda", allow(dead_code))]
    NoCuda,
    /// A CUDA library this build opens at run time is not on the library path.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    MissingLibrary(&'static str),
    /// The CUDA driver refused the device (no such GPU, out of memory, ...).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Open { ordinal: usize, reason: String },
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceError::NoCuda => f.write_str(
                "this binary was built without CUDA; rebuild with --features cuda \
                 (scripts/build-cuda.sh) or use --device cpu",
            ),
            DeviceError::MissingLibrary(lib) if lib.starts_with("libcuda.") => write!(
                f,
                "the NVIDIA driver's {lib} was not found: this machine has no NVIDIA driver \
                 (or it is not on the library path); use --device cpu"
            ),
            DeviceError::MissingLibrary(lib) => write!(
                f,
                "the CUDA library {lib} was not found: add the folder that holds it (a CUDA \
                 toolkit's lib64, or PyTorch's site-packages/nvidia/cu13/lib) to LD_LIBRARY_PATH"
            ),
            DeviceError::Open { ordinal, reason } => {
                write!(f, "cannot open CUDA device {ordinal}: {reason}")
            }
        }
    }
}

impl std::error::Error for DeviceError {}

impl DeviceArg {
    /// Opens the device. Call it once per command and share the result: tensors on two
    /// separately opened CUDA devices cannot be mixed.
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            DeviceArg::Cpu => Ok(Device::Cpu),
            DeviceArg::Cuda(ordinal) => open_cuda(ordinal),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> Result<Device, DeviceError> {
    use candle_core::cuda_backend::cudarc;
    // cudarc panics when a library it loads lazily is missing; check them first so that a
    // missing one is an error naming it. SAFETY: these only try to dlopen the libraries.
    let libraries = unsafe {
        [
            ("libcuda.so", cudarc::driver::sys::is_culib_present()),
            ("libcublas.so", cudarc::cublas::sys::is_culib_present()),
            ("libcurand.so", cudarc::curand::sys::is_culib_present()),
        ]
    };
    if let Some((lib, _)) = libraries.iter().find(|(_, present)| !present) {
        return Err(DeviceError::MissingLibrary(lib));
    }
    Device::new_cuda(ordinal).map_err(|e| DeviceError::Open {
        ordinal,
        reason: e.to_string(),
    })
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(_ordinal: usize) -> Result<Device, DeviceError> {
    Err(DeviceError::NoCuda)
}

/// The `--device` flag, flattened into every command that runs a model.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct DeviceOpt {
    /// Where the model runs: cpu, cuda (the first GPU) or cuda:N. CUDA needs a binary built with
    /// --features cuda (scripts/build-cuda.sh); data loading stays on the CPU either way.
    #[arg(long, default_value = "cpu", value_name = "DEVICE")]
    pub device: DeviceArg,
}

impl DeviceOpt {
    /// Opens the chosen device (see [`DeviceArg::open`]).
    pub fn open(self) -> anyhow::Result<Device> {
        Ok(self.device.open()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        assert_eq!("cpu".parse(), Ok(DeviceArg::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceArg::Cuda(0)));
        assert_eq!("cuda:0".parse(), Ok(DeviceArg::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceArg::Cuda(3)));
        for (arg, shown) in [(DeviceArg::Cpu, "cpu"), (DeviceArg::Cuda(2), "cuda:2")] {
            assert_eq!(arg.to_string(), shown);
            assert_eq!(shown.parse(), Ok(arg));
        }
        assert_eq!(DeviceArg::default(), DeviceArg::Cpu);
    }

    #[test]
    fn bad_names_are_errors_that_say_what_is_accepted() {
        for bad in [
            "", "gpu", "CUDA", "cuda:", "cuda:x", "cuda:-1", "cuda:1:2", "metal", " cpu",
        ] {
            let err = bad.parse::<DeviceArg>().unwrap_err();
            assert!(err.contains("cpu, cuda or cuda:N"), "{bad:?}: {err}");
        }
        assert!("cuda:99999999999999999999999".parse::<DeviceArg>().is_err());
    }

    #[test]
    fn the_cpu_always_opens() {
        assert!(DeviceArg::Cpu.open().unwrap().is_cpu());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        let err = DeviceArg::Cuda(0).open().unwrap_err();
        assert_eq!(err, DeviceError::NoCuda);
        let msg = err.to_string();
        assert!(msg.contains("built without CUDA"), "{msg}");
        assert!(msg.contains("--features cuda"), "{msg}");
    }
}
