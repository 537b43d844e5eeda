//! Device layouts of the plan's activations.
//!
//! Every activation is a 2-D TILE tensor `[32 * row_tiles, 32 * col_tiles]`: the first logical
//! dimension (tokens) are the rows, everything else is flattened into columns. The flattened
//! columns are cut into `groups` segments of `width` real columns, each zero padded to whole tiles,
//! so that per-head and per-layer pieces (`[S, heads, D]`, `[S, layers, P]`) start on a tile.
//! Buffers that an elementwise kernel maps one to one (and reshapes of one storage) share a layout;
//! its `width` is the narrowest last dimension among them.

use std::collections::BTreeMap;

use gemma4c_ir::DType;
use gemma4c_passes::plan::{BufferKind, Program};

use super::TtError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevLayout {
    /// Logical rows (tokens).
    pub rows: usize,
    /// Segments per row.
    pub groups: usize,
    /// Real columns per segment.
    pub width: usize,
}

impl DevLayout {
    pub fn flat(rows: usize, cols: usize) -> DevLayout {
        DevLayout {
            rows,
            groups: 1,
            width: cols,
        }
    }

    /// The same device layout, written with the fewest segments (a tile-aligned width needs none).
    pub fn canonical(self) -> DevLayout {
        if self.width.is_multiple_of(32) {
            DevLayout::flat(self.rows, self.groups * self.width)
        } else {
            self
        }
    }

    pub fn seg_tiles(&self) -> usize {
        self.width.div_ceil(32)
    }

    pub fn col_tiles(&self) -> usize {
        self.groups * self.seg_tiles()
    }

    pub fn row_tiles(&self) -> usize {
        self.rows.div_ceil(32)
    }

    /// Real (logical) columns.
    pub fn cols(&self) -> usize {
        self.groups * self.width
    }

    /// `[rows, cols]` of the device tensor.
    pub fn dev_shape(&self) -> [usize; 2] {
        [self.row_tiles() * 32, self.col_tiles() * 32]
    }

    /// Device column of logical column `c`.
    pub fn dev_col(&self, c: usize) -> usize {
        (c / self.width) * self.seg_tiles() * 32 + c % self.width
    }

    /// Short suffix naming a segmented layout (empty when it needs no padding inside a row).
    pub fn tag(&self) -> String {
        let c = self.canonical();
        if c.groups == 1 {
            String::new()
        } else {
            format!("g{}x{}", c.groups, c.width)
        }
    }
}

/// Layout of every activation/view/input buffer of a program (by buffer id; state and weight
/// buffers have none).
pub fn infer(p: &Program) -> Result<BTreeMap<usize, DevLayout>, TtError> {
    let n = p.buffers.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    fn union(parent: &mut [usize], a: usize, b: usize) {
        let (ra, rb) = (find(parent, a), find(parent, b));
        if ra != rb {
            parent[ra.max(rb)] = ra.min(rb);
        }
    }
    // Float activations and views (token ids and expert indices stay on the host).
    let is_act = |id: usize| {
        matches!(
            p.buffers[id].kind,
            BufferKind::Activation { .. } | BufferKind::View { .. }
        ) && p.buffers[id].dtype != DType::I32
    };
    for b in &p.buffers {
        if let BufferKind::View { of } = b.kind {
            union(&mut parent, b.id, of);
        }
    }
    for s in &p.steps {
        if !s.op.preserves_layout() {
            continue;
        }
        let numel = |id: usize| p.buffers[id].shape.iter().product::<usize>();
        let anchor = s.outputs[0];
        for &id in s.inputs.iter().chain(&s.outputs) {
            if is_act(id) && numel(id) == numel(anchor) {
                union(&mut parent, id, anchor);
            }
        }
    }
    // Widths per class.
    let mut class: BTreeMap<usize, (usize, Vec<usize>)> = BTreeMap::new();
    for b in &p.buffers {
        if !is_act(b.id) {
            continue;
        }
        if b.shape.len() < 2 {
            return Err(TtError::new(format!(
                "activation buffer {} has rank {} (expected [tokens, ...])",
                b.id,
                b.shape.len()
            )));
        }
        let r = find(&mut parent, b.id);
        let e = class.entry(r).or_insert((b.shape[0], Vec::new()));
        if e.0 != b.shape[0] {
            return Err(TtError::new(format!(
                "buffers of one layout class disagree on the token count ({} vs {})",
                e.0, b.shape[0]
            )));
        }
        e.1.push(b.id);
    }
    let mut out = BTreeMap::new();
    for (_, (rows, ids)) in class {
        let width = ids
            .iter()
            .map(|&i| *p.buffers[i].shape.last().unwrap_or(&1))
            .min()
            .unwrap_or(1);
        let total: usize = p.buffers[ids[0]].shape[1..].iter().product();
        for &i in &ids {
            let s = &p.buffers[i].shape;
            let last = *s.last().unwrap_or(&1);
            let t: usize = s[1..].iter().product();
            if !last.is_multiple_of(width) || t != total {
                return Err(TtError::new(format!(
                    "no common tile layout for buffer {i} of shape {s:?} (segments of {width} columns)"
                )));
            }
        }
        let l = DevLayout {
            rows,
            groups: total / width,
            width,
        }
        .canonical();
        for i in ids {
            out.insert(i, l);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_pad_to_whole_tiles() {
        let l = DevLayout {
            rows: 1,
            groups: 6,
            width: 16,
        };
        assert_eq!(l.dev_shape(), [32, 192]);
        assert_eq!(l.dev_col(0), 0);
        assert_eq!(l.dev_col(17), 33);
        assert_eq!(l.tag(), "g6x16");
        // Tile-aligned segments need no padding: the canonical form is one flat row.
        let h = DevLayout {
            rows: 1,
            groups: 8,
            width: 256,
        }
        .canonical();
        assert_eq!(h, DevLayout::flat(1, 2048));
        assert_eq!(h.tag(), "");
        assert_eq!(DevLayout::flat(1, 8).dev_shape(), [32, 32]);
    }
}
