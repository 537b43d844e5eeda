//! plan.json of block-quantized CPU plans (`DType::Block` weights: GGUF Q8_0,
//! Q4_K, ... or `--quant`): what `run --plan` does before the JIT binds
//! anything (deserialize, plan checker, target lookup), then the kernel
//! lowering and the LLVM IR the JIT would compile (`kernels.ll`, dequantizing
//! matmul and embedding kernels included). Seeds: plans compiled from the GGUF
//! fixtures and with `--quant q8_0|q4_0` (scripts/fuzz.sh). A plan the checker
//! accepts must never make lowering or printing panic.
#![no_main]

use gemma4c_passes::plan::Plan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(plan) = serde_json::from_slice::<Plan>(data) else {
        return;
    };
    if plan.check().is_err() || gemma4c_backends::lookup(&plan.target).is_err() {
        return;
    }
    // kernels.ll as `compile` writes it for the CPU (tiled prefill matmuls included).
    let _ = gemma4c_backends::cpu::kernels_ll(&plan);
});
