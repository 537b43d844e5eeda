//! Safetensors files and shard indexes: `Checkpoint::open` on a directory
//! holding the input as `model.safetensors`, or (input starting with `{`) as
//! `model.safetensors.index.json` next to two small valid shards; then every
//! tensor is read. Any panic, abort or hang is a bug.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use gemma4c_frontend::Checkpoint;
use libfuzzer_sys::fuzz_target;

/// A scratch directory per process with the two shards an index may name.
fn dirs() -> &'static (PathBuf, PathBuf) {
    static DIRS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    DIRS.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("gemma4c-fuzz-checkpoint-{}", std::process::id()));
        let (single, sharded) = (base.join("single"), base.join("sharded"));
        std::fs::create_dir_all(&single).expect("mkdir");
        std::fs::create_dir_all(&sharded).expect("mkdir");
        let data = [0u8; 16];
        for (i, name) in ["model.norm.weight", "model.embed_tokens.weight"].iter().enumerate() {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![4], &data).expect("view");
            let bytes = safetensors::serialize([(name.to_string(), view)], None).expect("serialize");
            std::fs::write(sharded.join(format!("model-0000{}-of-00002.safetensors", i + 1)), bytes).expect("write");
        }
        (single, sharded)
    })
}

fuzz_target!(|data: &[u8]| {
    let (single, sharded) = dirs();
    let dir = if data.first() == Some(&b'{') {
        std::fs::write(sharded.join("model.safetensors.index.json"), data).expect("write");
        sharded
    } else {
        std::fs::write(single.join("model.safetensors"), data).expect("write");
        single
    };
    if let Ok(ck) = Checkpoint::open(dir) {
        let keys: Vec<String> = ck.keys().map(str::to_string).collect();
        for k in keys {
            let _ = ck.load_f32(&k);
        }
        let _ = ck.total_bytes();
    }
});
