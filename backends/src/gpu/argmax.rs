//! Greedy sampling on the device: the argmax of the last row of logits, so a greedy decode
//! step sends one id to the host instead of a vocabulary of logits (262,144 floats, 1 MiB,
//! for Gemma 4).
//!
//! One workgroup; its lanes split the vocabulary twice: the first pass finds the largest
//! logit (and counts NaN values), the second the lowest index holding it, as a maximum of
//! `-index` so the GPU combine (sum and maximum of f32) serves both. The result is two f32
//! values: the index (exact: vocabularies are far below 2^24) and the NaN count, which the
//! host turns into the same error the host sampler gives. Ties go to the lowest index, as
//! `torch.argmax` and `gemma4c_runtime::sampler::argmax` break them.

use crate::kernel::build::{eq, neg, not, select, to_f32, KernelBuilder};
use crate::kernel::{Access, Elem, Kernel};

/// Elements the argmax kernel writes: `[index, NaN count]`.
pub const SAMPLED_VALUES: usize = 2;

/// Argmax of the last `vocab` of `n` f32 logits. Params: `logits [n], sampled [2]`.
pub fn argmax(n: usize, vocab: usize) -> Kernel {
    assert!(vocab <= n && vocab < 1 << 24, "argmax of {vocab} of {n} logits");
    let mut b = KernelBuilder::new(format!("argmax_n{n}_v{vocab}"), 1);
    let logits = b.param("logits", Elem::F32, Access::Read);
    let out = b.param("sampled", Elem::F32, Access::ReadWrite);
    let base = (n - vocab) as i64;
    let best = b.let_f32("best", f32::NEG_INFINITY);
    let nan = b.let_f32("nan", 0.0f32);
    b.for_range("i", 0usize, vocab, |b, i| {
        let x = logits.at(&i + base);
        b.max(best, x.clone());
        b.sum(nan, select(not(eq(x.clone(), x)), 1.0f32, 0.0f32));
    });
    let first = b.let_f32("first", f32::NEG_INFINITY);
    b.for_range("i", 0usize, vocab, |b, i| {
        let hit = eq(logits.at(&i + base), best);
        b.max(first, select(hit, neg(to_f32(i)), f32::NEG_INFINITY));
    });
    b.store(out, 0i64, neg(first));
    b.store(out, 1i64, nan);
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::schedule::derive;
    use crate::gpu::{Body, GStmt};

    #[test]
    fn both_passes_split_the_vocabulary_across_lanes() {
        let g = derive(&argmax(3 * 1000, 1000));
        let Body::Workgroup(b) = &g.body else { panic!("{g:?}") };
        let lanes = b.iter().filter(|s| matches!(s, GStmt::Lanes { .. })).count();
        let widths: Vec<usize> = b
            .iter()
            .filter_map(|s| match s {
                GStmt::Combine(v) => Some(v.len()),
                _ => None,
            })
            .collect();
        assert_eq!((lanes, widths), (2, vec![2, 1]), "{b:?}");
        assert_eq!(g.workgroups(), 1);
        assert!(matches!(b.last(), Some(GStmt::Lane0(s)) if s.len() == 2), "{b:?}");
    }
}
