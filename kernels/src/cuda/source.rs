//! The CUDA C sources of herd's kernels, embedded in the binary, and the translation units made of
//! them: one for NVRTC (the device) and one for the host C++ compiler (the emulator). Kernel
//! names are read from the sources (`extern "C" __global__ void NAME(`), so adding a kernel needs
//! no list to keep in step.

/// The NVRTC-only prelude: CUDA headers and the device versions of herd's portability macros.
const PRELUDE: &str = include_str!("../../cuda/prelude.cuh");
/// The emulator's prelude (see its header comment).
const EMU: &str = include_str!("../../cuda/emu/emu.h");
/// Helpers shared by every kernel file.
const COMMON: &str = include_str!("../../cuda/common.cuh");

/// The kernel files, in the order they are concatenated.
pub const FILES: &[(&str, &str)] = &[
    ("convert.cu", include_str!("../../cuda/convert.cu")),
    ("norm.cu", include_str!("../../cuda/norm.cu")),
    ("attention.cu", include_str!("../../cuda/attention.cu")),
    ("flash.cu", include_str!("../../cuda/flash.cu")),
    ("gemv.cu", include_str!("../../cuda/gemv.cu")),
    ("moe.cu", include_str!("../../cuda/moe.cu")),
    ("gemm.cu", include_str!("../../cuda/gemm.cu")),
];

fn body() -> String {
    let mut s = String::new();
    s.push_str("#line 1 \"common.cuh\"\n");
    s.push_str(COMMON);
    for (name, text) in FILES {
        s.push_str(&format!("\n#line 1 \"{name}\"\n"));
        s.push_str(text);
    }
    s
}

/// The translation unit NVRTC compiles.
pub fn nvrtc_source() -> String {
    format!("#line 1 \"prelude.cuh\"\n{PRELUDE}\n{}", body())
}

/// The translation unit the emulator compiles: the emulation header, the kernels, and one
/// `extern "C"` entry point per kernel.
pub fn emu_source() -> String {
    let mut s = format!("{EMU}\n{}\n", body());
    for name in kernel_names() {
        s.push_str(&format!("HERD_EMU_ENTRY({name})\n"));
    }
    s
}

/// Names of every kernel, in source order.
pub fn kernel_names() -> Vec<&'static str> {
    FILES.iter().flat_map(|(_, text)| names_in(text)).collect()
}

/// The kernel names declared in one source text.
fn names_in(text: &'static str) -> Vec<&'static str> {
    const MARK: &str = "extern \"C\" __global__ void ";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(MARK) {
        let mut tail = &rest[at + MARK.len()..];
        if let Some(t) = tail.strip_prefix("__launch_bounds__(") {
            tail = t.split_once(')').map_or("", |(_, r)| r).trim_start();
        }
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        if end > 0 {
            out.push(&tail[..end]);
        }
        rest = &tail[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_are_read_from_declarations_with_and_without_launch_bounds() {
        let text = "extern \"C\" __global__ void a_f32(int n) {}\n\
                    extern \"C\" __global__ void __launch_bounds__(256, 2) gemv_bf16_t4(const float* x) {}";
        assert_eq!(names_in(text), vec!["a_f32", "gemv_bf16_t4"]);
    }

    #[test]
    fn every_kernel_name_is_unique() {
        let names = kernel_names();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "duplicate kernel names in {names:?}");
        assert!(names.len() > 20, "found only {names:?}");
    }
}
