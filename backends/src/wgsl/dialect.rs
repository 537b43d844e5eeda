//! The WGSL dialect of the C-style printer.
//!
//! WGSL differs from C in declarations (`var x: f32 = ...`), `select` for `?:`, conversions
//! (`f32(i)`), and module-level buffers (`@group(0) @binding(n) var<storage, ...>`, named
//! after their kernel, since one module holds every kernel). Integers are `i32`: every index
//! is below 2^31 because a buffer binding holds at most 4 GiB of elements of at least 2 bytes
//! (the runtime refuses larger buffers). bf16 and f16 buffers are `array<u32>` (two elements
//! per word, little-endian); WGSL kernels only read them. `tanh` is spelled out with `exp` of a
//! non-positive argument, which cannot overflow for large inputs.

use crate::cstyle::{Dialect, GpuDialect};
use crate::gpu::{Body, GpuKernel};
use crate::kernel::{Access, Elem, ReduceOp, Scalar, UnOp, BLOCK_CPU_ONLY};

pub struct Wgsl;

impl Dialect for Wgsl {
    fn prelude(&self) -> &str {
        "fn g4_tanh(x: f32) -> f32 {\n    let e = exp(-2.0f * abs(x));\n    return sign(x) * (1.0f - e) / (1.0f + e);\n}\n"
    }

    fn signature(&self, name: &str, params: &[String]) -> String {
        format!(
            "{}\n@compute @workgroup_size(1)\nfn {name}(@builtin(workgroup_id) g4_wg: vec3<u32>) {{",
            params.join("\n")
        )
    }

    fn row_index(&self, rows: usize) -> Vec<String> {
        vec![
            "let row: i32 = i32(g4_wg.x);".into(),
            format!("if (row >= {rows}i) {{ return; }}"),
        ]
    }

    fn elem_type(&self, e: Elem) -> &str {
        match e {
            Elem::F32 => "f32",
            Elem::BF16 | Elem::F16 => "u32",
            Elem::I32 => "i32",

            Elem::Block(_) => unreachable!("{BLOCK_CPU_ONLY}"),
        }
    }

    fn widen(&self, _: Elem, _: &str) -> String {
        unreachable!("WGSL loads go through `load`")
    }

    fn narrow(&self, e: Elem, _: &str) -> String {
        unreachable!("WGSL kernels never store {e:?} (the backend checks)")
    }

    fn non_finite(&self, x: f32) -> String {
        format!("bitcast<f32>({:#010x}u)", x.to_bits())
    }

    fn table_qualifiers(&self) -> &str {
        ""
    }

    fn helper_qualifiers(&self) -> &str {
        ""
    }

    fn param(&self, index: usize, e: Elem, access: Access, name: &str) -> String {
        let mode = if access == Access::Read { "read" } else { "read_write" };
        format!(
            "@group(0) @binding({index}) var<storage, {mode}> {name}: array<{}>;",
            self.elem_type(e)
        )
    }

    fn scalar_type(&self, s: Scalar) -> &str {
        match s {
            Scalar::F32 => "f32",
            Scalar::I64 => "i32",
            Scalar::Bool => "bool",
        }
    }

    fn math(&self, op: UnOp) -> &str {
        match op {
            UnOp::Exp => "exp",
            UnOp::Tanh => "g4_tanh",
            UnOp::Cos => "cos",
            UnOp::Sin => "sin",
            UnOp::Sqrt => "sqrt",
            UnOp::Neg | UnOp::ToF32 | UnOp::Not | UnOp::F16Bits | UnOp::Sext8 => {
                unreachable!("{op:?} is an operator, not a function")
            }
        }
    }

    fn min_max_f32(&self) -> (&str, &str) {
        ("min", "max")
    }

    fn declare(&self, ty: Scalar, name: &str, init: &str) -> String {
        format!("var {name}: {} = {init};", self.scalar_type(ty))
    }

    fn declare_const_int(&self, name: &str, value: &str) -> String {
        format!("let {name}: i32 = {value};")
    }

    fn for_header(&self, var: &str, start: &str, end: &str, step: Option<&str>) -> String {
        let step = step.unwrap_or("1i");
        format!("for ({var} = {start}; {var} < {end}; {var} += {step}) {{")
    }

    fn int_lit(&self, x: i64) -> String {
        if x < 0 {
            format!("(-{}i)", x.unsigned_abs())
        } else {
            format!("{x}i")
        }
    }

    fn select(&self, c: &str, a: &str, b: &str) -> String {
        format!("select({b}, {a}, {c})")
    }

    fn int_to_f32(&self, a: &str) -> String {
        format!("f32({a})")
    }

    fn load(&self, e: Elem, param: &str, index: &str) -> String {
        match e {
            Elem::F32 | Elem::I32 => format!("{param}[{index}]"),
            Elem::BF16 => format!("bitcast<f32>(({param}[({index}) / 2i] >> (u32(({index}) % 2i) * 16u)) << 16u)"),
            Elem::F16 => format!("unpack2x16float({param}[({index}) / 2i])[({index}) % 2i]"),
            Elem::Block(_) => unreachable!("{BLOCK_CPU_ONLY}"),
        }
    }

    fn store(&self, _: Elem, param: &str, index: &str, value: &str) -> String {
        format!("{param}[{index}] = {value};")
    }

    fn param_name(&self, kernel: &str, i: usize, name: &str) -> String {
        format!("{kernel}_a{i}_{name}")
    }

    fn table(&self, name: &str, values: &[String]) -> String {
        let n = values.len();
        format!(
            "var<private> {name}: array<f32, {n}> = array<f32, {n}>({});",
            values.join(", ")
        )
    }

    fn int_helper(&self, name: &str, op: char) -> String {
        format!("fn {name}(a: i32, b: i32) -> i32 {{ return select(b, a, a {op} b); }}")
    }
}

impl GpuDialect for Wgsl {
    fn gpu_signature(&self, k: &GpuKernel, params: &[String]) -> String {
        let mut s = params.join("\n");
        let width = k.combine_width();
        let mut builtins = vec![
            "@builtin(workgroup_id) g4_wg: vec3<u32>",
            "@builtin(num_workgroups) g4_nwg: vec3<u32>",
            "@builtin(local_invocation_index) g4_lid: u32",
        ];
        if width > 0 {
            s += &format!(
                "\nvar<workgroup> {}: array<f32, {}>;",
                self.shared(&k.kernel.name),
                width * k.threads
            );
            builtins.extend([
                "@builtin(subgroup_invocation_id) g4_sg_lane: u32",
                "@builtin(subgroup_id) g4_sg_id: u32",
                "@builtin(num_subgroups) g4_n_sg: u32",
            ]);
        }
        for t in &k.shared {
            s += &format!(
                "\nvar<workgroup> {}: array<f32, {}>;",
                self.tile(&k.kernel.name, &t.name),
                t.len
            );
        }
        s += &format!(
            "\n@compute @workgroup_size({})\nfn {}({}) {{",
            k.threads,
            k.kernel.name,
            builtins.join(", ")
        );
        s
    }

    fn gpu_prologue(&self, k: &GpuKernel) -> Vec<String> {
        // More than 65535 workgroups are dispatched as a 2-D grid of rows.
        let group = "(g4_wg.y * g4_nwg.x + g4_wg.x)";
        let row = match k.body {
            Body::Thread => format!("let row: i32 = i32({group} * {}u + g4_lid);", k.threads),
            Body::Workgroup(_) => format!("let row: i32 = i32({group});"),
        };
        vec![
            row,
            format!("if (row >= {}i) {{ return; }}", k.kernel.rows),
            "let lane: i32 = i32(g4_lid);".into(),
        ]
    }

    fn barrier(&self) -> &str {
        "storageBarrier(); workgroupBarrier();"
    }

    fn subgroup_reduce(&self, op: ReduceOp, v: &str) -> String {
        match op {
            ReduceOp::Add => format!("subgroupAdd({v})"),
            ReduceOp::Max => format!("subgroupMax({v})"),
        }
    }

    fn first_in_subgroup(&self) -> &str {
        "g4_sg_lane == 0u"
    }

    fn is_lane0(&self) -> &str {
        "g4_lid == 0u"
    }

    fn subgroup_id(&self) -> &str {
        "i32(g4_sg_id)"
    }

    fn num_subgroups(&self) -> &str {
        "i32(g4_n_sg)"
    }

    fn shared(&self, kernel: &str) -> String {
        format!("{kernel}_partials")
    }

    fn tile(&self, kernel: &str, tile: &str) -> String {
        format!("{kernel}_{tile}")
    }
}
