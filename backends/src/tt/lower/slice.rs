//! Slices: a tile-aligned column range (the per-layer-input slice). A slice over tokens (the
//! prefill program's `last_position`, before the LM head) never reaches the TT lowering: a
//! prefill chunk keeps only the steps that fill the KV caches (`program::cache_filling`).

use gemma4c_passes::plan::Step;

use super::ctx::Ctx;
use super::{Arg, Item, Source};
use crate::tt::kernels;
use crate::tt::TtError;

#[allow(clippy::too_many_arguments)]
pub(super) fn lower(
    c: &mut Ctx,
    s: &Step,
    comment: String,
    items: &mut Vec<Item>,
    axis: usize,
    start: usize,
    end: usize,
) -> Result<(), TtError> {
    let t = c.t;
    let (x, out) = (s.inputs[0], s.outputs[0]);
    let (lx, lo) = (c.lay(x)?, c.lay(out)?);
    let shape = c.shape(x).to_vec();
    if axis == 0 {
        return Err(c.err(
            s,
            "a slice over tokens has no TT lowering (a prefill chunk computes no logits)",
        ));
    }
    let inner: usize = shape[axis + 1..].iter().product();
    let (c0, len) = (start * inner, (end - start) * inner);
    let aligned = if lx.width % 32 == 0 {
        c0 % 32 == 0 && len % 32 == 0
    } else {
        c0 % lx.width == 0 && len % lx.width == 0 && lo.width == lx.width
    };
    if !aligned || lo.cols() != len {
        return Err(c.err(s, format!("slice {c0}..{} is not tile aligned in {lx:?}", c0 + len)));
    }
    let offset = lx.dev_col(c0) / 32;
    let off = c.prep(
        format!("slice.offset{offset}"),
        1,
        32,
        false,
        Source::Index { value: offset },
    )?;
    let k = kernels::copy(t, "tile-aligned slice", lo.row_tiles(), lo.col_tiles())?;
    let k = c.kernel(k);
    items.push(Item::kernel(
        comment,
        k,
        vec![Arg::Buf(x), Arg::W(off), Arg::Buf(out)],
        vec![x],
        vec![out],
    ));
    Ok(())
}
