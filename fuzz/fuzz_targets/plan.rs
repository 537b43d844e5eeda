//! plan.json loading: deserialize, run the plan checker and the target lookup
//! (what `check_plan` does before either executor allocates), and lower an
//! accepted plan to kernels. A plan the checker accepts must never make
//! lowering panic.
#![no_main]

use gemma4c_passes::plan::Plan;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(plan) = serde_json::from_slice::<Plan>(data) else {
        return;
    };
    if plan.check().is_ok() && gemma4c_backends::lookup(&plan.target).is_ok() {
        let _ = gemma4c_backends::kernel::kernel_plan(&plan, gemma4c_backends::kernel::Tiles::Local);
    }
});
