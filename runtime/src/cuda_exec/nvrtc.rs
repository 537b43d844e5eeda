//! `kernels.cu` → `kernels.ptx` with NVRTC, loaded at run time: from the NVRTC pip wheels
//! (`GEMMA4C_NVRTC_DIR`, else `~/.cache/gemma4c/nvrtc-12.9`, where scripts/setup.sh puts
//! them) or from the library path. The PTX is what the CUDA executor loads, so the GPU machine
//! needs only the driver.

use std::path::PathBuf;

use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions};

/// The wheel directory holding `nvidia/cuda_nvrtc/lib/libnvrtc.so.12` and the
/// `nvidia/cuda_runtime/include` headers (`cuda_bf16.h`).
fn wheel_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("GEMMA4C_NVRTC_DIR") {
        return Some(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".cache/gemma4c/nvrtc-12.9"))
}

/// Loads libnvrtc from the wheel by its full path, so that `cudarc`'s load by name
/// (`libnvrtc.so.12`) finds it already in the process. Returns the include directory.
fn preload() -> Option<PathBuf> {
    let dir = wheel_dir()?;
    let lib = dir.join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
    if lib.is_file() {
        // SAFETY: loading NVIDIA's NVRTC library runs its initializers only.
        if let Ok(l) = unsafe { libloading::Library::new(&lib) } {
            // Kept loaded for the life of the process.
            std::mem::forget(l);
        }
    }
    let include = dir.join("nvidia/cuda_runtime/include");
    include.is_dir().then_some(include)
}

/// PTX of `source` for `arch` (`compute_90`), or why not (no NVRTC, a compile error with
/// NVRTC's log).
pub fn compile_ptx(source: &str, arch: &'static str) -> Result<String, String> {
    let include = preload();
    // SAFETY: only tries to dlopen libnvrtc by its usual names.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(format!(
            "NVRTC (libnvrtc.so.12) not found: install the nvidia-cuda-nvrtc-cu12 and \
             nvidia-cuda-runtime-cu12 wheels into {} (scripts/setup.sh does) or set GEMMA4C_NVRTC_DIR \
             or LD_LIBRARY_PATH",
            wheel_dir().map_or("~/.cache/gemma4c/nvrtc-12.9".into(), |d| d.display().to_string())
        ));
    }
    let opts = CompileOptions {
        arch: Some(arch),
        include_paths: include.iter().map(|p| p.display().to_string()).collect(),
        options: vec!["-default-device".into()],
        name: Some("kernels.cu".into()),
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(source, opts).map_err(|e| match e {
        CompileError::CompileError { log, .. } => format!("NVRTC: {}", log.to_string_lossy()),
        other => format!("NVRTC: {other:?}"),
    })?;
    Ok(ptx.to_src())
}
