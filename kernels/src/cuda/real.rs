//! The real driver: cudarc over the CUDA driver API, NVRTC and cuBLAS, all opened at run time.

use super::driver::{DeviceInfo, Driver, Gemm, GemmType};
use super::{Error, Result, nvrtc, source};
use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{result as cu, sys};
use std::cell::Cell;
use std::ffi::{CString, c_void};

/// Whether `libcuda.so` can be loaded.
pub(crate) fn driver_present() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { sys::is_culib_present() }
}

/// Whether cuBLAS (`libcublas.so.13` with `libcublasLt.so.13`) can be loaded.
pub(crate) fn cublas_present() -> bool {
    // SAFETY: only tries to open the library.
    unsafe { blas_sys::is_culib_present() }
}

fn init() -> Result<()> {
    if !driver_present() {
        return Err(Error::NoDriver("the CUDA driver library (libcuda.so.1) was not found on this machine".into()));
    }
    cu::init().map_err(|e| Error::NoDriver(format!("cuInit failed: {e:?}")))
}

/// The number of devices.
pub(crate) fn device_count() -> Result<usize> {
    init()?;
    cu::device::get_count().map(|n| n as usize).map_err(|e| Error::NoDriver(format!("cuDeviceGetCount: {e:?}")))
}

/// Free and total memory of device `ordinal`, bytes.
pub(crate) fn mem_info(ordinal: usize) -> Result<(usize, usize)> {
    let count = device_count()?;
    if ordinal >= count {
        return Err(Error::NoDevice { ordinal, count });
    }
    let dev = cu::device::get(ordinal as i32).map_err(cuda("cuDeviceGet"))?;
    // SAFETY: dev is a valid device; the retain is released below.
    let ctx = unsafe { cu::primary_ctx::retain(dev) }.map_err(cuda("cuDevicePrimaryCtxRetain"))?;
    let info = unsafe { cu::ctx::set_current(ctx) }
        .map_err(cuda("cuCtxSetCurrent"))
        .and_then(|_| cu::mem_get_info().map_err(cuda("cuMemGetInfo")));
    CURRENT.with(|c| c.set(0));
    let _ = unsafe { cu::primary_ctx::release(dev) };
    info
}

fn cuda(what: &str) -> impl Fn(cu::DriverError) -> Error + '_ {
    move |e| Error::Cuda { what: what.into(), message: format!("{e:?}") }
}

thread_local! {
    /// The context made current on this thread last (contexts are per thread in the driver API).
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

pub(crate) struct CudaDriver {
    ctx: sys::CUcontext,
    stream: sys::CUstream,
    funcs: Vec<sys::CUfunction>,
    blas: blas_sys::cublasHandle_t,
    info: DeviceInfo,
}

// SAFETY: the handles are plain driver handles; the driver API is thread-safe once the context is
// made current on the calling thread, which every method does first (`bind`).
unsafe impl Send for CudaDriver {}
unsafe impl Sync for CudaDriver {}

impl CudaDriver {
    pub(crate) fn open(ordinal: usize, names: &[&'static str]) -> Result<Self> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(Error::NoDevice { ordinal, count });
        }
        let dev = cu::device::get(ordinal as i32).map_err(cuda("cuDeviceGet"))?;
        let attr = |a| unsafe { cu::device::get_attribute(dev, a) }.map_err(cuda("cuDeviceGetAttribute"));
        use sys::CUdevice_attribute::*;
        let arch = (attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)? as u32, attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)? as u32);
        let multiprocessors = attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32;
        let name = cu::device::get_name(dev).map_err(cuda("cuDeviceGetName"))?;
        // SAFETY: dev is a valid device.
        let total_mem = unsafe { cu::device::total_mem(dev) }.map_err(cuda("cuDeviceTotalMem"))?;
        let ctx = unsafe { cu::primary_ctx::retain(dev) }.map_err(cuda("cuDevicePrimaryCtxRetain"))?;
        unsafe { cu::ctx::set_current(ctx) }.map_err(cuda("cuCtxSetCurrent"))?;
        CURRENT.with(|c| c.set(ctx as usize));
        let stream = cu::stream::create(cu::stream::StreamKind::NonBlocking).map_err(cuda("cuStreamCreate"))?;

        let cubin = nvrtc::cached_cubin(&source::nvrtc_source(), arch)?;
        // SAFETY: the image is a complete cubin for this device's architecture.
        let module = unsafe { cu::module::load_data(cubin.as_ptr() as *const c_void) }.map_err(cuda("cuModuleLoadData"))?;
        let mut funcs = Vec::with_capacity(names.len());
        for n in names {
            let cname = CString::new(*n).map_err(|_| Error::Invalid(format!("kernel name {n}")))?;
            funcs.push(unsafe { cu::module::get_function(module, cname) }.map_err(cuda("cuModuleGetFunction"))?);
        }

        if !cublas_present() {
            return Err(Error::Setup(
                "the cuBLAS library (libcublas.so.13 with libcublasLt.so.13) was not found: put its folder on LD_LIBRARY_PATH".into(),
            ));
        }
        let blas = blas::create_handle().map_err(|e| Error::Cublas { what: "cublasCreate".into(), message: format!("{e:?}") })?;
        unsafe { blas::set_stream(blas, stream as _) }
            .map_err(|e| Error::Cublas { what: "cublasSetStream".into(), message: format!("{e:?}") })?;
        let info = DeviceInfo { name, arch, total_mem, multiprocessors, emulated: false };
        Ok(Self { ctx, stream, funcs, blas, info })
    }

    fn bind(&self) -> Result<()> {
        let me = self.ctx as usize;
        if CURRENT.with(|c| c.get()) != me {
            // SAFETY: ctx is the retained primary context of this driver's device.
            unsafe { cu::ctx::set_current(self.ctx) }.map_err(cuda("cuCtxSetCurrent"))?;
            CURRENT.with(|c| c.set(me));
        }
        Ok(())
    }
}

impl Driver for CudaDriver {
    fn info(&self) -> DeviceInfo {
        self.info.clone()
    }

    fn mem_free(&self) -> Result<usize> {
        self.bind()?;
        cu::mem_get_info().map(|(free, _)| free).map_err(cuda("cuMemGetInfo"))
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        self.bind()?;
        // SAFETY: plain allocation; the contents are never read before being written.
        match unsafe { cu::malloc_sync(bytes) } {
            Ok(p) => Ok(p),
            Err(cu::DriverError(sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY)) => {
                let (free, total) = cu::mem_get_info().unwrap_or((0, self.info.total_mem));
                Err(Error::OutOfMemory { requested: bytes, free, total })
            }
            Err(e) => Err(cuda("cuMemAlloc")(e)),
        }
    }

    fn free(&self, ptr: u64) {
        // Work queued on the stream may still use the memory: wait for it first (frees are rare:
        // staging buffers while loading, a workspace that grows). An error here (a dead context)
        // has no remedy.
        if self.bind().is_ok() && self.sync().is_ok() {
            let _ = unsafe { cu::free_sync(ptr) };
        }
    }

    fn htod(&self, dst: u64, src: &[u8]) -> Result<()> {
        self.bind()?;
        // SAFETY: dst holds src.len() bytes (the caller's buffer); from pageable memory the call
        // returns once src has been staged, so src may be reused afterwards.
        unsafe { cu::memcpy_htod_async(dst, src, self.stream) }.map_err(cuda("cuMemcpyHtoDAsync"))
    }

    fn dtoh(&self, dst: &mut [u8], src: u64) -> Result<()> {
        self.bind()?;
        // SAFETY: src holds dst.len() bytes; into pageable memory the call returns when done.
        unsafe { cu::memcpy_dtoh_async(dst, src, self.stream) }.map_err(cuda("cuMemcpyDtoHAsync"))?;
        self.sync()
    }

    fn memset(&self, dst: u64, value: u8, bytes: usize) -> Result<()> {
        self.bind()?;
        unsafe { cu::memset_d8_async(dst, value, bytes, self.stream) }.map_err(cuda("cuMemsetD8Async"))
    }

    fn launch(&self, k: usize, name: &str, grid: [u32; 3], block: [u32; 3], smem: u32, params: &mut [*mut c_void]) -> Result<()> {
        self.bind()?;
        // SAFETY: the function belongs to the loaded module; `params` point at values laid out as
        // the kernel's parameters (ops.rs builds them from the kernel's signature).
        unsafe { cu::launch_kernel(self.funcs[k], (grid[0], grid[1], grid[2]), (block[0], block[1], block[2]), smem, self.stream, params) }
            .map_err(|e| Error::Cuda {
                what: format!("launching {name} grid {grid:?} block {block:?} smem {smem}"),
                message: format!("{e:?}"),
            })
    }

    fn allow_smem(&self, k: usize, bytes: u32) -> Result<()> {
        self.bind()?;
        let attr = sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
        unsafe { cu::function::set_function_attribute(self.funcs[k], attr, bytes as i32) }.map_err(cuda("cuFuncSetAttribute"))
    }

    fn gemm(&self, g: &Gemm) -> Result<()> {
        self.bind()?;
        use blas_sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
        use blas_sys::cudaDataType::{CUDA_R_16BF, CUDA_R_32F};
        let op = |t: bool| if t { CUBLAS_OP_T } else { CUBLAS_OP_N };
        let ab = match g.ty {
            GemmType::F32 => CUDA_R_32F,
            GemmType::Bf16 => CUDA_R_16BF,
        };
        let (alpha, beta) = (g.alpha, g.beta);
        // SAFETY: the operands are device buffers of the sizes the caller described; alpha and
        // beta are host scalars (cuBLAS's default pointer mode).
        unsafe {
            blas::gemm_ex(
                self.blas,
                op(g.trans_a),
                op(g.trans_b),
                g.m as i32,
                g.n as i32,
                g.k as i32,
                &alpha as *const f32 as *const c_void,
                g.a as *const c_void,
                ab,
                g.lda as i32,
                g.b as *const c_void,
                ab,
                g.ldb as i32,
                &beta as *const f32 as *const c_void,
                g.c as *mut c_void,
                CUDA_R_32F,
                g.ldc as i32,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::Cublas { what: format!("cublasGemmEx {}x{}x{} {:?}", g.m, g.n, g.k, g.ty), message: format!("{e:?}") })
    }

    fn sync(&self) -> Result<()> {
        self.bind()?;
        unsafe { cu::stream::synchronize(self.stream) }.map_err(cuda("cuStreamSynchronize (an earlier kernel may have failed)"))
    }
}
