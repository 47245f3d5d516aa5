//! The CUDA device layer: herd's kernels (CUDA C in `kernels/cuda/*.cu`, compiled at start by
//! NVRTC for the device's architecture and cached on disk) and cuBLAS GEMMs, driven through
//! cudarc with dynamic loading — a build needs no CUDA toolkit, and a machine without a driver
//! gets a clear error, never a panic.
//!
//! - [`Gpu`]: one device with its stream, module and cuBLAS handle; [`DevBuf`] is memory on it.
//! - [`ops`]: typed launches of every kernel (grid shapes, argument order) — the only place that
//!   names kernels.
//! - Two drivers behind [`Gpu`]: the real one (`real`, cudarc) and an emulator (`emu`) that
//!   compiles the same kernel sources with the host C++ compiler and runs them on the CPU, so the
//!   whole CUDA path is tested on machines without a GPU. The emulator is a test tool: it proves
//!   the host logic and the kernels' arithmetic, not the GPU's behaviour (timing, races, limits).

mod driver;
mod emu;
pub mod nvrtc;
pub mod ops;
mod real;
pub mod source;

pub use driver::{Arg, DeviceInfo, Gemm, GemmType};

use driver::Driver;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What went wrong on the device side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CUDA driver library could not be found or initialised.
    #[error("no usable CUDA driver: {0}")]
    NoDriver(String),
    /// The requested device does not exist.
    #[error("CUDA device {ordinal} does not exist ({count} device(s) found)")]
    NoDevice { ordinal: usize, count: usize },
    /// A driver call failed.
    #[error("CUDA error in {what}: {message}")]
    Cuda { what: String, message: String },
    /// A cuBLAS call failed.
    #[error("cuBLAS error in {what}: {message}")]
    Cublas { what: String, message: String },
    /// The kernels did not compile.
    #[error("the CUDA kernels did not compile for {target}:\n{log}")]
    Compile { target: String, log: String },
    /// Something the device layer needs at start is missing (NVRTC, headers, a compiler).
    #[error("{0}")]
    Setup(String),
    /// Not enough device memory.
    #[error("out of device memory: {requested} bytes requested, {free} free of {total}")]
    OutOfMemory { requested: usize, free: usize, total: usize },
    /// A launch or copy was asked with arguments that cannot be right (a bug in the caller).
    #[error("bad device call: {0}")]
    Invalid(String),
}

/// Result of the device layer.
pub type Result<T> = std::result::Result<T, Error>;

/// One CUDA device (or its CPU emulation) with a stream, herd's kernels loaded and a cuBLAS handle.
/// All work is queued on the one stream, in order; [`Gpu::sync`] waits for it.
pub struct Gpu {
    drv: Box<dyn Driver>,
    kernels: HashMap<&'static str, usize>,
    launches: AtomicU64,
    allocated: AtomicUsize,
}

impl Gpu {
    /// Opens CUDA device `ordinal`: loads the driver, NVRTC and cuBLAS, compiles (or reads from the
    /// cache) the kernels for its architecture.
    pub fn open(ordinal: usize) -> Result<Arc<Self>> {
        let names = source::kernel_names();
        let drv = real::CudaDriver::open(ordinal, &names)?;
        Ok(Arc::new(Self::with(Box::new(drv), &names)))
    }

    /// The CPU emulation of a device (tests on machines without a GPU): the same kernel sources
    /// compiled with the host C++ compiler (`CXX`, else `g++`).
    pub fn emulated() -> Result<Arc<Self>> {
        let names = source::kernel_names();
        let drv = emu::EmuDriver::open(&names)?;
        Ok(Arc::new(Self::with(Box::new(drv), &names)))
    }

    fn with(drv: Box<dyn Driver>, names: &[&'static str]) -> Self {
        let kernels = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
        Self { drv, kernels, launches: AtomicU64::new(0), allocated: AtomicUsize::new(0) }
    }

    /// Name, architecture and memory of the device.
    pub fn info(&self) -> DeviceInfo {
        self.drv.info()
    }

    /// True for the CPU emulation.
    pub fn is_emulated(&self) -> bool {
        self.drv.info().emulated
    }

    /// Free device memory, bytes.
    pub fn mem_free(&self) -> Result<usize> {
        self.drv.mem_free()
    }

    /// Bytes allocated through this handle and not freed yet.
    pub fn allocated(&self) -> usize {
        self.allocated.load(Ordering::Relaxed)
    }

    /// Kernel launches and cuBLAS calls queued since the device was opened.
    pub fn launches(&self) -> u64 {
        self.launches.load(Ordering::Relaxed)
    }

    /// `bytes` of device memory (contents undefined).
    pub fn alloc(self: &Arc<Self>, bytes: usize) -> Result<DevBuf> {
        let ptr = if bytes == 0 { 0 } else { self.drv.alloc(bytes)? };
        self.allocated.fetch_add(bytes, Ordering::Relaxed);
        Ok(DevBuf { gpu: self.clone(), ptr, bytes })
    }

    /// `bytes` of device memory set to zero.
    pub fn zeros(self: &Arc<Self>, bytes: usize) -> Result<DevBuf> {
        let b = self.alloc(bytes)?;
        self.memset(b.ptr, 0, bytes)?;
        Ok(b)
    }

    /// A device copy of `data`.
    pub fn upload<T: Copy>(self: &Arc<Self>, data: &[T]) -> Result<DevBuf> {
        let b = self.alloc(std::mem::size_of_val(data))?;
        self.htod(b.ptr, as_bytes(data))?;
        Ok(b)
    }

    /// Copies host bytes to device address `dst`, in stream order. `src` may be reused or freed
    /// when this returns.
    pub fn htod(&self, dst: u64, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        self.drv.htod(dst, src)
    }

    /// Waits for the stream, then copies `dst.len()` elements from device address `src`.
    pub fn dtoh<T: Copy>(&self, src: u64, dst: &mut [T]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        // SAFETY: T is Copy (plain data); the bytes written are a valid T as read from the device.
        let bytes = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut u8, std::mem::size_of_val(dst)) };
        self.drv.dtoh(bytes, src)
    }

    /// Sets `bytes` bytes at `dst` to `value`, in stream order.
    pub fn memset(&self, dst: u64, value: u8, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        self.drv.memset(dst, value, bytes)
    }

    /// Queues kernel `name` on the stream.
    pub fn launch(&self, name: &str, grid: [u32; 3], block: [u32; 3], smem: u32, args: &[Arg]) -> Result<()> {
        let &k = self.kernels.get(name).ok_or_else(|| Error::Invalid(format!("no kernel named {name}")))?;
        if grid.contains(&0) {
            return Ok(());
        }
        let mut slots: Vec<u64> = args.iter().map(Arg::bits).collect();
        let mut params: Vec<*mut std::ffi::c_void> = slots.iter_mut().map(|s| s as *mut u64 as *mut std::ffi::c_void).collect();
        self.launches.fetch_add(1, Ordering::Relaxed);
        self.drv.launch(k, name, grid, block, smem, &mut params)
    }

    /// Lets kernel `name` use up to `bytes` of dynamic shared memory (above the default 48 KiB).
    pub fn allow_smem(&self, name: &str, bytes: u32) -> Result<()> {
        let &k = self.kernels.get(name).ok_or_else(|| Error::Invalid(format!("no kernel named {name}")))?;
        self.drv.allow_smem(k, bytes)
    }

    /// Queues a cuBLAS GEMM (column-major, as cuBLAS defines it).
    pub fn gemm(&self, g: &Gemm) -> Result<()> {
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        self.launches.fetch_add(1, Ordering::Relaxed);
        self.drv.gemm(g)
    }

    /// Waits until everything queued has run.
    pub fn sync(&self) -> Result<()> {
        self.drv.sync()
    }
}

/// The order the CPU emulation runs a block's threads in between barriers. A correct kernel gives
/// the same result in every order; one that lacks a barrier between a thread's write and another
/// thread's read fails in one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadOrder {
    /// 0, 1, …, n - 1.
    Index = 0,
    /// n - 1, …, 0.
    Reverse = 1,
    /// A fresh random order at every barrier.
    Shuffle = 2,
}

impl Gpu {
    /// Sets the thread order of the CPU emulation, for every emulated device of this process.
    pub fn set_thread_order(&self, order: ThreadOrder) -> Result<()> {
        self.drv.set_thread_order(order)
    }
}

/// Memory on a [`Gpu`], freed (in stream order) when dropped.
pub struct DevBuf {
    gpu: Arc<Gpu>,
    ptr: u64,
    bytes: usize,
}

impl DevBuf {
    /// The device address.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// The device address `offset` bytes in.
    pub fn at(&self, offset: usize) -> u64 {
        debug_assert!(offset <= self.bytes, "offset {offset} past a buffer of {} bytes", self.bytes);
        self.ptr + offset as u64
    }

    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The device it lives on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Copies the whole buffer to the host as elements of `T`.
    pub fn to_vec<T: Copy + Default>(&self) -> Result<Vec<T>> {
        let mut v = vec![T::default(); self.bytes / std::mem::size_of::<T>()];
        self.gpu.dtoh(self.ptr, &mut v)?;
        Ok(v)
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        if self.ptr != 0 {
            self.gpu.drv.free(self.ptr);
        }
        self.gpu.allocated.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The bytes of a slice of plain values.
pub fn as_bytes<T: Copy>(data: &[T]) -> &[u8] {
    // SAFETY: any initialised memory can be viewed as bytes; the length is the slice's size.
    unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, std::mem::size_of_val(data)) }
}

/// Whether a CUDA driver library can be loaded on this machine (no device is touched).
pub fn driver_present() -> bool {
    real::driver_present()
}

/// What a machine has of the CUDA libraries herd opens at run time (see [`libraries`]).
#[derive(Clone, Debug)]
pub struct Libraries {
    /// The driver (`libcuda.so.1`; a GPU host's, never in an image).
    pub driver: bool,
    /// NVRTC's version, or why it cannot be used.
    pub nvrtc: std::result::Result<(i32, i32), String>,
    /// herd's kernels compiled by NVRTC for the target (cubin bytes), or why they were not.
    pub kernels: std::result::Result<usize, String>,
    /// cuBLAS.
    pub cublas: bool,
}

impl Libraries {
    /// Everything a GPU worker needs besides the driver and a device.
    pub fn ready_but_driver(&self) -> bool {
        self.nvrtc.is_ok() && self.kernels.is_ok() && self.cublas
    }
}

/// Checks the CUDA libraries without a device: opens the driver, NVRTC and cuBLAS, and compiles
/// herd's kernels for `target` (e.g. `sm_90`) with NVRTC — what a GPU image must hold.
pub fn libraries(target: &str) -> Libraries {
    let nvrtc = nvrtc::version().map_err(|e| e.to_string());
    let kernels = match &nvrtc {
        Ok(_) => nvrtc::include_dirs()
            .and_then(|inc| nvrtc::compile(&source::nvrtc_source(), target, &inc))
            .map(|bin| bin.len())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    Libraries { driver: real::driver_present(), nvrtc, kernels, cublas: real::cublas_present() }
}

/// Free and total memory of CUDA device `ordinal`, bytes.
pub fn mem_info(ordinal: usize) -> Result<(usize, usize)> {
    real::mem_info(ordinal)
}

/// The number of CUDA devices, or why there are none.
pub fn device_count() -> Result<usize> {
    real::device_count()
}

#[cfg(test)]
mod tests;
