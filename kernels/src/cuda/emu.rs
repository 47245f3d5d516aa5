//! The CPU emulation of a device, for tests on machines without a GPU: the kernel sources are
//! compiled with the host C++ compiler against `kernels/cuda/emu/emu.h` into a shared library
//! (cached by source hash), device memory is host memory, and GEMMs are computed by a plain loop
//! following cuBLAS's definition. Everything runs synchronously.

use super::driver::{DeviceInfo, Driver, Gemm, GemmType};
use super::{Error, Result, source};
use sha2::{Digest, Sha256};
use std::alloc::Layout;
use std::collections::HashMap;
use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::Mutex;

type Entry = unsafe extern "C" fn(*const u32, *const u32, u32, *mut *mut c_void);

pub(crate) struct EmuDriver {
    // Keeps the compiled kernels loaded; `entries` point into it.
    _lib: libloading::Library,
    entries: Vec<Entry>,
    set_order: unsafe extern "C" fn(i32),
    allocs: Mutex<HashMap<u64, Layout>>,
}

/// Alignment of emulated allocations (the driver's is at least 256 bytes).
const ALIGN: usize = 256;

impl EmuDriver {
    pub(crate) fn open(names: &[&'static str]) -> Result<Self> {
        let lib_path = compile()?;
        // SAFETY: the library was built by `compile` from herd's own kernel sources; loading runs
        // no initialisers beyond the C++ runtime's.
        let lib = unsafe { libloading::Library::new(&lib_path) }
            .map_err(|e| Error::Setup(format!("loading the emulated kernels {}: {e}", lib_path.display())))?;
        let mut entries = Vec::with_capacity(names.len());
        for n in names {
            let sym = format!("herd_emu_{n}");
            // SAFETY: every entry point has the signature of HERD_EMU_ENTRY in emu.h.
            let f: libloading::Symbol<'_, Entry> =
                unsafe { lib.get(sym.as_bytes()) }.map_err(|e| Error::Setup(format!("emulated kernel {n}: {e}")))?;
            entries.push(*f);
        }
        // SAFETY: herd_emu_set_order is defined in emu.h with this signature.
        let set_order: libloading::Symbol<'_, unsafe extern "C" fn(i32)> =
            unsafe { lib.get(b"herd_emu_set_order") }.map_err(|e| Error::Setup(format!("emulated kernels: {e}")))?;
        let set_order = *set_order;
        Ok(Self { _lib: lib, entries, set_order, allocs: Mutex::default() })
    }
}

/// Builds (or finds in the cache) the shared library of emulated kernels.
fn compile() -> Result<PathBuf> {
    let src = source::emu_source();
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    // HERD_EMU_CXXFLAGS adds flags (say `-fsanitize=address -DHERD_EMU_NO_FAST_SWITCH` to look for
    // out-of-bounds accesses, with the sanitizer's runtime preloaded).
    let extra = std::env::var("HERD_EMU_CXXFLAGS").unwrap_or_default();
    let mut flags = vec!["-std=c++17", "-O2", "-fPIC", "-shared", "-w", "-pthread"];
    flags.extend(extra.split_whitespace());
    let mut h = Sha256::new();
    h.update(src.as_bytes());
    h.update(format!("\0{cxx}\0{}", flags.join(" ")).as_bytes());
    let key: String = h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
    let dir = std::env::var_os("HERD_EMU_DIR").map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join("herd-emu"));
    let lib = dir.join(format!("kernels-{key}.so"));
    if lib.is_file() {
        return Ok(lib);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::Setup(format!("creating {}: {e}", dir.display())))?;
    let unique = format!("{}-{:?}", std::process::id(), std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let cpp = dir.join(format!("kernels-{key}-{unique}.cpp"));
    let tmp = dir.join(format!("kernels-{key}-{unique}.so"));
    std::fs::write(&cpp, &src).map_err(|e| Error::Setup(format!("writing {}: {e}", cpp.display())))?;
    let out = std::process::Command::new(&cxx)
        .args(&flags)
        .arg("-o")
        .arg(&tmp)
        .arg(&cpp)
        .output()
        .map_err(|e| Error::Setup(format!("running the C++ compiler `{cxx}` for the emulated kernels: {e}")))?;
    if !out.status.success() {
        return Err(Error::Compile {
            target: format!("the CPU emulation ({cxx})"),
            log: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let _ = std::fs::remove_file(&cpp);
    std::fs::rename(&tmp, &lib).map_err(|e| Error::Setup(format!("moving {} into place: {e}", tmp.display())))?;
    Ok(lib)
}

impl Driver for EmuDriver {
    fn info(&self) -> DeviceInfo {
        DeviceInfo { name: "CPU emulation".into(), arch: (9, 0), total_mem: 1 << 34, multiprocessors: 2, emulated: true }
    }

    fn mem_free(&self) -> Result<usize> {
        Ok(1 << 34)
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        let layout = Layout::from_size_align(bytes, ALIGN).map_err(|e| Error::Invalid(format!("allocation of {bytes} bytes: {e}")))?;
        // SAFETY: the layout has a non-zero size (Gpu::alloc never asks for zero bytes).
        let p = unsafe { std::alloc::alloc(layout) };
        if p.is_null() {
            return Err(Error::OutOfMemory { requested: bytes, free: 0, total: 0 });
        }
        self.allocs.lock().unwrap_or_else(|e| e.into_inner()).insert(p as u64, layout);
        Ok(p as u64)
    }

    fn free(&self, ptr: u64) {
        if let Some(layout) = self.allocs.lock().unwrap_or_else(|e| e.into_inner()).remove(&ptr) {
            // SAFETY: ptr was allocated by `alloc` with this layout and is freed once.
            unsafe { std::alloc::dealloc(ptr as *mut u8, layout) };
        }
    }

    fn htod(&self, dst: u64, src: &[u8]) -> Result<()> {
        // SAFETY: dst is an emulated device address with room for src (the caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    fn dtoh(&self, dst: &mut [u8], src: u64) -> Result<()> {
        // SAFETY: as in htod.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn memset(&self, dst: u64, value: u8, bytes: usize) -> Result<()> {
        // SAFETY: as in htod.
        unsafe { std::ptr::write_bytes(dst as *mut u8, value, bytes) };
        Ok(())
    }

    fn launch(&self, k: usize, name: &str, grid: [u32; 3], block: [u32; 3], smem: u32, params: &mut [*mut c_void]) -> Result<()> {
        let threads = block.iter().product::<u32>();
        if threads == 0 || threads > 1024 || !threads.is_multiple_of(32) {
            return Err(Error::Invalid(format!("{name}: a block of {threads} threads")));
        }
        // SAFETY: the entry point unpacks `params` by the kernel's own parameter types.
        unsafe { (self.entries[k])(grid.as_ptr(), block.as_ptr(), smem, params.as_mut_ptr()) };
        Ok(())
    }

    fn allow_smem(&self, _k: usize, _bytes: u32) -> Result<()> {
        Ok(())
    }

    fn gemm(&self, g: &Gemm) -> Result<()> {
        // SAFETY: the operands are emulated device buffers of the sizes the caller described.
        unsafe { reference_gemm(g) };
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn set_thread_order(&self, order: super::ThreadOrder) -> Result<()> {
        // SAFETY: a plain store into the library's global.
        unsafe { (self.set_order)(order as i32) };
        Ok(())
    }
}

/// cuBLAS's GEMM by its definition (column-major; f32 accumulation).
///
/// # Safety
/// `a`, `b`, `c` are host addresses of buffers large enough for the described matrices.
pub(crate) unsafe fn reference_gemm(g: &Gemm) {
    let load = |p: u64, i: usize| -> f32 {
        // SAFETY: i indexes inside the operand (the caller's contract).
        unsafe {
            match g.ty {
                GemmType::F32 => *(p as *const f32).add(i),
                GemmType::Bf16 => (*(p as *const half::bf16).add(i)).to_f32(),
            }
        }
    };
    let a_at = |i: usize, l: usize| {
        if g.trans_a { load(g.a, l + i * g.lda) } else { load(g.a, i + l * g.lda) }
    };
    let b_at = |l: usize, j: usize| {
        if g.trans_b { load(g.b, j + l * g.ldb) } else { load(g.b, l + j * g.ldb) }
    };
    let c = g.c as *mut f32;
    let mut col = vec![0f32; g.k];
    for j in 0..g.n {
        for (l, v) in col.iter_mut().enumerate() {
            *v = b_at(l, j);
        }
        for i in 0..g.m {
            let mut s = 0f32;
            for (l, v) in col.iter().enumerate() {
                s += a_at(i, l) * v;
            }
            // SAFETY: (i, j) lies inside C.
            unsafe {
                let at = c.add(i + j * g.ldc);
                *at = if g.beta == 0.0 { g.alpha * s } else { g.alpha * s + g.beta * *at };
            }
        }
    }
}
