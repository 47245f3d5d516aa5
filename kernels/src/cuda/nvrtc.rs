//! Compiling the kernels with NVRTC (no GPU needed) and caching the result on disk.
//!
//! A real architecture (`sm_90`) gives a cubin the driver loads as is. The cache key is the
//! SHA-256 of the source, the target, NVRTC's version and the options, so a changed kernel, a new
//! GPU or a new NVRTC compiles again; the cache lives in `HERD_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/herd`, else `~/.cache/herd`.
//!
//! NVRTC needs CUDA's runtime headers (`cuda_bf16.h`, `mma.h` and `crt/`): `HERD_CUDA_INCLUDE`
//! (folders separated by `:`), else `$CUDA_HOME/include` (or `CUDA_PATH`, `CUDA_ROOT`), else
//! `/usr/local/cuda/include`, else the `nvidia/cu13/include` folder of a Python environment's CUDA
//! wheels.

use super::{Error, Result};
use cudarc::nvrtc::{result, sys};
use sha2::{Digest, Sha256};
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// Whether the NVRTC library can be loaded.
pub fn present() -> bool {
    // SAFETY: only tries to open the library; no NVRTC function is called.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's version `(major, minor)`.
pub fn version() -> Result<(i32, i32)> {
    require()?;
    let (mut a, mut b) = (0, 0);
    // SAFETY: the library is present (checked above); both pointers are valid.
    unsafe { sys::nvrtcVersion(&mut a, &mut b) }.result().map_err(|e| Error::Setup(format!("nvrtcVersion: {e:?}")))?;
    Ok((a, b))
}

fn require() -> Result<()> {
    if present() {
        Ok(())
    } else {
        Err(Error::Setup(
            "the NVRTC library (libnvrtc.so.13) was not found: install CUDA 13's NVRTC and put its lib folder on LD_LIBRARY_PATH".into(),
        ))
    }
}

/// The folders holding CUDA's runtime headers, or why none was found.
pub fn include_dirs() -> Result<Vec<PathBuf>> {
    let has = |p: &Path| p.join("cuda_bf16.h").is_file() && p.join("crt").join("mma.h").is_file();
    if let Ok(v) = std::env::var("HERD_CUDA_INCLUDE") {
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&v).collect();
        if dirs.iter().any(|d| has(d)) {
            let cccl: Vec<PathBuf> = dirs.iter().map(|d| d.join("cccl")).filter(|d| d.is_dir() && !dirs.contains(d)).collect();
            dirs.extend(cccl);
            return Ok(dirs);
        }
        return Err(Error::Setup(format!("HERD_CUDA_INCLUDE={v} holds no cuda_bf16.h with crt/mma.h beside it")));
    }
    let mut candidates: Vec<PathBuf> =
        ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"].iter().filter_map(std::env::var_os).map(|v| PathBuf::from(v).join("include")).collect();
    candidates.push("/usr/local/cuda/include".into());
    for base in ["/usr/local/lib", "/usr/lib", "/opt/conda/lib"] {
        candidates.extend(python_wheels(Path::new(base)));
    }
    if let Ok(entries) = std::fs::read_dir("/opt") {
        for e in entries.flatten() {
            candidates.extend(python_wheels(&e.path().join(".venv/lib")));
            candidates.extend(python_wheels(&e.path().join("lib")));
        }
    }
    candidates.into_iter().find(|d| has(d)).map(|d| vec![d.clone(), d.join("cccl")]).ok_or_else(|| {
        Error::Setup("CUDA's runtime headers (cuda_bf16.h, crt/mma.h) were not found: set HERD_CUDA_INCLUDE or CUDA_HOME".into())
    })
}

/// `…/python3.*/{site,dist}-packages/nvidia/cu13/include` under `lib`.
fn python_wheels(lib: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(lib) else {
        return vec![];
    };
    let mut out = vec![];
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with("python3") {
            for pk in ["site-packages", "dist-packages"] {
                out.push(e.path().join(pk).join("nvidia/cu13/include"));
            }
        }
    }
    out
}

/// Compiles `src` for `target` (`sm_90`, or `compute_90` for PTX only) and returns the cubin (or
/// the PTX text's bytes).
pub fn compile(src: &str, target: &str, include: &[PathBuf]) -> Result<Vec<u8>> {
    compile_with(src, target, include, &[]).map(|(bin, _)| bin)
}

/// [`compile`] with more NVRTC options; also returns the compiler's log (warnings, and with
/// `--ptxas-options=-v` each kernel's registers, spills and shared memory).
pub fn compile_with(src: &str, target: &str, include: &[PathBuf], extra: &[&str]) -> Result<(Vec<u8>, String)> {
    require()?;
    let code = CString::new(src).map_err(|_| Error::Invalid("kernel source holds a NUL byte".into()))?;
    let prog = result::create_program(&code, Some(c"herd_kernels.cu")).map_err(|e| Error::Setup(format!("nvrtcCreateProgram: {e:?}")))?;
    let mut opts = vec![format!("--gpu-architecture={target}"), "--std=c++17".into(), "-DHERD_NVRTC=1".into(), "-lineinfo".into()];
    opts.extend(include.iter().map(|d| format!("-I{}", d.display())));
    opts.extend(extra.iter().map(|o| o.to_string()));
    // SAFETY: prog was just created and is destroyed below, once.
    let compiled = unsafe { result::compile_program(prog, &opts) };
    let log = unsafe { result::get_program_log(prog) }.map(|l| c_text(&l)).unwrap_or_default();
    let out = match compiled {
        Err(_) => Err(Error::Compile { target: target.into(), log }),
        Ok(()) if target.starts_with("sm_") => cubin(prog).map(|b| (b, log)),
        Ok(()) => unsafe { result::get_ptx(prog) }
            .map(|p| (c_text(&p).into_bytes(), log))
            .map_err(|e| Error::Setup(format!("nvrtcGetPTX: {e:?}"))),
    };
    // SAFETY: prog is live and not used after this.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

fn cubin(prog: sys::nvrtcProgram) -> Result<Vec<u8>> {
    let mut n = 0usize;
    // SAFETY: prog compiled successfully for a real architecture; the buffer has the reported size.
    unsafe { sys::nvrtcGetCUBINSize(prog, &mut n) }.result().map_err(|e| Error::Setup(format!("nvrtcGetCUBINSize: {e:?}")))?;
    let mut buf = vec![0u8; n];
    unsafe { sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut std::ffi::c_char) }
        .result()
        .map_err(|e| Error::Setup(format!("nvrtcGetCUBIN: {e:?}")))?;
    Ok(buf)
}

fn c_text(v: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = v.iter().map(|&c| c as u8).take_while(|&c| c != 0).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Where compiled kernels are cached.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HERD_CACHE_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("herd");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/herd"),
        None => std::env::temp_dir().join("herd-cache"),
    }
}

/// The cubin of `src` for compute capability `arch`, from the cache or compiled now (and cached;
/// a cache that cannot be written only costs a compile next time).
pub fn cached_cubin(src: &str, arch: (u32, u32)) -> Result<Vec<u8>> {
    let target = format!("sm_{}{}", arch.0, arch.1);
    let (major, minor) = version()?;
    let mut h = Sha256::new();
    h.update(src.as_bytes());
    h.update(format!("\0{target}\0nvrtc {major}.{minor}\0-lineinfo").as_bytes());
    let key: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let path = cache_dir().join("cuda").join(format!("kernels-{target}-{}.cubin", &key[..32]));
    if let Ok(bin) = std::fs::read(&path)
        && !bin.is_empty()
    {
        return Ok(bin);
    }
    let bin = compile(src, &target, &include_dirs()?)?;
    if let Some(dir) = path.parent()
        && std::fs::create_dir_all(dir).is_ok()
    {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, &bin).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok(bin)
}
