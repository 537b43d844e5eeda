//! The text form back into a graph: the inverse of `print.rs`.
//!
//! `parse(&print(g))` rebuilds `g` node for node. Nodes go through the builder, so result types
//! are inferred again and must equal the printed ones, and the finished graph is verified; a
//! hand-written graph (a rule test's input) is therefore checked like a built one. Node numbers
//! must count up from `%0` without gaps, as the printer writes them. Errors name the line.

use crate::builder::GraphBuilder;
use crate::dtype::{DType, TensorType};
use crate::graph::{Graph, Value};
use crate::op::{InputRole, Op, RopeSpec};

/// A text graph that does not parse: 1-based line number and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Parses one `graph NAME { ... }` in the printer's format (`#` comments after a node are its
/// name; blank lines and lines starting with `//` are skipped).
pub fn parse(text: &str) -> Result<Graph, ParseError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with("//"));
    let (first, header) = lines.next().ok_or(ParseError {
        line: 1,
        message: "empty text (expected `graph NAME {`)".into(),
    })?;
    let name = header
        .strip_prefix("graph ")
        .and_then(|r| r.strip_suffix('{'))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| err(first, "expected `graph NAME {`"))?;
    let mut b = GraphBuilder::new(name);
    let mut values: Vec<Vec<Value>> = Vec::new();
    let mut closed = false;
    for (n, line) in lines {
        if closed {
            return Err(err(n, "text after the closing `}`"));
        }
        if line == "}" {
            closed = true;
        } else if let Some(rest) = line.strip_prefix("output ") {
            let (out, v) = rest
                .split_once(" = ")
                .ok_or_else(|| err(n, "expected `output NAME = %N`"))?;
            let v = value_ref(v.trim(), &values).map_err(|m| err(n, &m))?;
            b.output(out.trim(), v);
        } else {
            let results = node(&mut b, line, &values).map_err(|m| err(n, &m))?;
            values.push(results);
        }
    }
    if !closed {
        return Err(err(text.lines().count(), "missing the closing `}`"));
    }
    b.finish().map_err(|e| err(first, &e.to_string()))
}

fn err(line: usize, message: &str) -> ParseError {
    ParseError {
        line,
        message: message.to_string(),
    }
}

/// `%N = op[attrs](%a, %b.1) : f32[1,2], i32[1]  # name` → the node's results.
fn node(b: &mut GraphBuilder, line: &str, values: &[Vec<Value>]) -> Result<Vec<Value>, String> {
    let index = values.len();
    let (def, name) = line
        .split_once("  # ")
        .ok_or("expected `%N = op(...) : type  # name`")?;
    let (id, rest) = def.split_once(" = ").ok_or("expected `%N = ...`")?;
    if id != format!("%{index}") {
        return Err(format!("expected node %{index}, found `{id}`"));
    }
    let (call, types) = rest.rsplit_once(" : ").ok_or("expected `: TYPE` after the op")?;
    let types = types.split(", ").map(tensor_type).collect::<Result<Vec<_>, _>>()?;
    // `mnemonic[attrs]` then `(operands)`; attributes may hold brackets but never `(`.
    let (op_text, operands) = match call.find('(') {
        Some(i) => {
            let args = call[i + 1..].strip_suffix(')').ok_or("unclosed operand list")?;
            let operands = args
                .split(", ")
                .map(|a| value_ref(a, values))
                .collect::<Result<Vec<_>, _>>()?;
            (&call[..i], operands)
        }
        None => (call, Vec::new()),
    };
    let op = op(op_text)?;
    if op.is_leaf() {
        let [ty] = types.as_slice() else {
            return Err("a leaf has one result type".into());
        };
        if !operands.is_empty() {
            return Err(format!("`{op_text}` takes no operands"));
        }
        return Ok(vec![match op {
            Op::Input { role } => b.input(name, role, ty.clone()),
            Op::Weight { key } if key == name => b.weight(&key, ty.clone()),
            Op::Weight { key } => return Err(format!("weight `{key}` must be named by its key, not `{name}`")),
            _ => unreachable!("leaves are inputs and weights"),
        }]);
    }
    let results = b.op_multi(op, &operands, name).map_err(|e| e.to_string())?;
    let inferred: Vec<String> = results.iter().map(|v| b.value_type(*v).to_string()).collect();
    let printed: Vec<String> = types.iter().map(|t| t.to_string()).collect();
    if inferred != printed {
        return Err(format!(
            "`{name}`: written type {} but the op gives {}",
            printed.join(", "),
            inferred.join(", ")
        ));
    }
    Ok(results)
}

/// `%7` or `%9.1`, a result of an earlier node.
fn value_ref(text: &str, values: &[Vec<Value>]) -> Result<Value, String> {
    let bad = || format!("expected a value `%N` or `%N.P`, found `{text}`");
    let body = text.strip_prefix('%').ok_or_else(bad)?;
    let (node, port) = match body.split_once('.') {
        Some((n, p)) => (n, p.parse::<usize>().map_err(|_| bad())?),
        None => (body, 0),
    };
    let node = node.parse::<usize>().map_err(|_| bad())?;
    let results = values
        .get(node)
        .ok_or_else(|| format!("`{text}` is not defined before this line"))?;
    results
        .get(port)
        .copied()
        .ok_or_else(|| format!("`{text}`: node %{node} has {} result(s)", results.len()))
}

/// `f32[1,128]` (`f32[]` for a scalar).
fn tensor_type(text: &str) -> Result<TensorType, String> {
    let bad = || format!("expected a type like `f32[1,128]`, found `{text}`");
    let (dtype, dims) = text.trim().split_once('[').ok_or_else(bad)?;
    let dtype = DType::parse(dtype).ok_or_else(bad)?;
    let dims = dims.strip_suffix(']').ok_or_else(bad)?;
    let shape = if dims.is_empty() {
        Vec::new()
    } else {
        dims.split(',')
            .map(|d| d.parse::<usize>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?
    };
    Ok(TensorType::new(dtype, shape))
}

/// `mnemonic` or `mnemonic[attrs]`, as `Op`'s `Display` writes them.
fn op(text: &str) -> Result<Op, String> {
    let (mnemonic, attrs) = match text.split_once('[') {
        Some((m, a)) => (
            m,
            Some(a.strip_suffix(']').ok_or_else(|| format!("unclosed `[` in `{text}`"))?),
        ),
        None => (text, None),
    };
    let a = Attrs::new(text, attrs.unwrap_or(""));
    let op = match mnemonic {
        "input" => Op::Input {
            role: match attrs {
                Some("token_ids") => InputRole::TokenIds,
                Some("position") => InputRole::Position,
                Some("kv_cache") => InputRole::KvCache,
                _ => return Err(format!("`{text}`: expected input[token_ids|position|kv_cache]")),
            },
        },
        "weight" => Op::Weight {
            key: attrs
                .filter(|k| !k.is_empty())
                .ok_or("expected weight[KEY]")?
                .to_string(),
        },
        "add" => Op::Add,
        "mul" => Op::Mul,
        "scale" => Op::Scale {
            factor: a.f32("factor")?,
        },
        "gelu_tanh" => Op::GeluTanh,
        "softcap" => Op::Softcap { cap: a.f32("cap")? },
        "reshape" => Op::Reshape {
            shape: a.list("shape")?.iter().map(|&x| x as usize).collect(),
        },
        "slice" => {
            let (start, end) = a.range()?;
            Op::Slice {
                axis: a.usize("axis")?,
                start,
                end,
            }
        }
        "replace_ids" => Op::ReplaceIds {
            ids: a.list("ids")?.iter().map(|&x| x as i32).collect(),
            with: a.get("with")?.parse().map_err(|_| a.bad("with"))?,
        },
        "embedding" => Op::Embedding,
        "matmul" => Op::MatMul,
        "rms_norm" => Op::RmsNorm { eps: a.f32("eps")? },
        "rope" => Op::Rope { rope: a.rope()? },
        "kv_write" => Op::KvWrite,
        "attention" => Op::Attention {
            window: if a.flag("causal") {
                None
            } else {
                Some(a.usize("window")?)
            },
            scale: a.f32("scale")?,
        },
        "moe_route" => Op::MoeRoute {
            top_k: a.usize("top_k")?,
        },
        "moe_experts" => Op::MoeExperts,
        "gelu_mul" => Op::GeluMul,
        "add_rms_norm" => Op::AddRmsNorm { eps: a.f32("eps")? },
        "norm_add_norm" => Op::NormAddNorm { eps: a.f32("eps")? },
        "norm_rope" => Op::NormRope {
            eps: a.f32("eps")?,
            rope: a.rope()?,
        },
        "rope_kv_write" => Op::RopeKvWrite {
            eps: a.f32("eps")?,
            rope: a.rope()?,
        },
        "norm_kv_write" => Op::NormKvWrite { eps: a.f32("eps")? },
        "norm_add" => Op::NormAdd { eps: a.f32("eps")? },
        "moe_router" => Op::MoeRouter {
            eps: a.f32("eps")?,
            scalar: a.f32("scalar")?,
            top_k: a.usize("top_k")?,
        },
        "logits_head" => Op::LogitsHead {
            eps: a.f32("eps")?,
            cap: a.has("cap").then(|| a.f32("cap")).transpose()?,
        },
        other => return Err(format!("unknown op `{other}`")),
    };
    // Printing the op again must give the same text: no attribute was ignored or misread.
    if op.to_string() != text {
        return Err(format!("`{text}` reads as `{op}`"));
    }
    Ok(op)
}

/// The `key=value` attributes of one op (top-level commas only: `shape=[1, 4, 32]` is one).
struct Attrs<'a> {
    op: &'a str,
    items: Vec<&'a str>,
}

impl<'a> Attrs<'a> {
    fn new(op: &'a str, text: &'a str) -> Attrs<'a> {
        let mut items = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in text.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        if !text.is_empty() {
            items.push(&text[start..]);
        }
        Attrs { op, items }
    }

    fn bad(&self, key: &str) -> String {
        format!("`{}`: bad or missing `{key}`", self.op)
    }

    fn has(&self, key: &str) -> bool {
        self.items
            .iter()
            .any(|i| i.split_once('=').is_some_and(|(k, _)| k == key))
    }

    fn flag(&self, key: &str) -> bool {
        self.items.contains(&key)
    }

    fn get(&self, key: &str) -> Result<&'a str, String> {
        self.items
            .iter()
            .find_map(|i| i.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
            .ok_or_else(|| self.bad(key))
    }

    fn f32(&self, key: &str) -> Result<f32, String> {
        self.get(key)?.parse().map_err(|_| self.bad(key))
    }

    fn f64(&self, key: &str) -> Result<f64, String> {
        self.get(key)?.parse().map_err(|_| self.bad(key))
    }

    fn usize(&self, key: &str) -> Result<usize, String> {
        self.get(key)?.parse().map_err(|_| self.bad(key))
    }

    /// `[1, 4, 32]` (signed, for replace_ids).
    fn list(&self, key: &str) -> Result<Vec<i64>, String> {
        let v = self.get(key)?;
        let inner = v
            .strip_prefix('[')
            .and_then(|v| v.strip_suffix(']'))
            .ok_or_else(|| self.bad(key))?;
        if inner.is_empty() {
            return Ok(Vec::new());
        }
        inner
            .split(", ")
            .map(|x| x.parse().map_err(|_| self.bad(key)))
            .collect()
    }

    /// The bare `START..END` item of a slice.
    fn range(&self) -> Result<(usize, usize), String> {
        let r = self
            .items
            .iter()
            .find(|i| i.contains(".."))
            .ok_or_else(|| self.bad("START..END"))?;
        let (s, e) = r.split_once("..").ok_or_else(|| self.bad("START..END"))?;
        Ok((
            s.parse().map_err(|_| self.bad("START"))?,
            e.parse().map_err(|_| self.bad("END"))?,
        ))
    }

    /// `theta=T,pairs=P/H,factor=F` (H is half the head dim).
    fn rope(&self) -> Result<RopeSpec, String> {
        let (pairs, half) = self.get("pairs")?.split_once('/').ok_or_else(|| self.bad("pairs"))?;
        Ok(RopeSpec {
            theta: self.f64("theta")?,
            head_dim: 2 * half.parse::<usize>().map_err(|_| self.bad("pairs"))?,
            rotated_pairs: pairs.parse().map_err(|_| self.bad("pairs"))?,
            factor: self.f64("factor")?,
        })
    }
}
