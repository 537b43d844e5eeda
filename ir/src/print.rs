//! Deterministic text form of a graph. Same graph in, byte-identical text out.
//!
//! ```text
//! graph gemma4_decode {
//!   %0 = input[token_ids] : i32[1]  # token_ids
//!   %7 = rms_norm[eps=1e-6](%5, %6) : f32[1,128]  # layers.0.input_layernorm
//!   %9 = moe_route[top_k=2](%8, %4) : f32[1,2], i32[1,2]  # layers.0.router
//!   output logits = %98
//! }
//! ```
//! Results of multi-result nodes are written `%9.1`.

use std::fmt::Write;

use crate::graph::{Graph, Value};

fn value_ref(v: Value) -> String {
    if v.port == 0 {
        format!("%{}", v.node.index())
    } else {
        format!("%{}.{}", v.node.index(), v.port)
    }
}

pub fn print(graph: &Graph) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "graph {} {{", graph.name);
    for (id, node) in graph.nodes() {
        let operands: Vec<String> = graph.operands(id).into_iter().map(value_ref).collect();
        let types: Vec<String> = node.outputs.iter().map(|t| t.to_string()).collect();
        let args = if operands.is_empty() {
            String::new()
        } else {
            format!("({})", operands.join(", "))
        };
        let _ = writeln!(
            s,
            "  %{} = {}{} : {}  # {}",
            id.index(),
            node.op,
            args,
            types.join(", "),
            node.name
        );
    }
    for out in graph.outputs() {
        let _ = writeln!(s, "  output {} = {}", out.name, value_ref(out.value));
    }
    s.push_str("}\n");
    s
}
