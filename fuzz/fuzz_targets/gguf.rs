//! GGUF headers: `GgufHeader::parse` on the input (metadata, tensor infos,
//! offsets and sizes validated against the file). Any panic, abort, hang or
//! allocation beyond the fuzzer's RSS limit is a bug.
#![no_main]

use gemma4c_frontend::gguf::GgufHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = GgufHeader::parse(data);
});
