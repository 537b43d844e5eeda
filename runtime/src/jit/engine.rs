//! LLVM JIT: parse `kernels.ll`, specialize it for the host CPU, optimize at O3
//! and compile it with MCJIT. Kernels are then plain function pointers.
//!
//! Compilation is split over threads: each thread parses the module, keeps
//! its share of the kernels, optimizes and generates code for them in its own
//! LLVM context, and then keeps that context (which owns the machine code)
//! alive until the `JitModule` is dropped.

use std::collections::{BTreeSet, HashMap};
use std::sync::mpsc;
use std::sync::Once;
use std::thread::JoinHandle;
use std::time::Instant;

use inkwell::attributes::AttributeLoc;
use inkwell::context::Context;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::module::Linkage;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, InitializationConfig, RelocMode, Target, TargetMachine};
use inkwell::OptimizationLevel;

use gemma4c_backends::kernel::CpuFeature;

/// Kernels compiled for this process.
pub struct JitModule {
    /// Address and buffer-parameter count of each kernel.
    functions: HashMap<String, (usize, usize)>,
    /// Threads holding the LLVM contexts that own the code; dropping the
    /// sender lets them finish.
    keepers: Vec<(mpsc::Sender<()>, JoinHandle<()>)>,
    /// Time to parse, optimize and compile, in milliseconds.
    pub compile_ms: f64,
    /// The CPU the code was specialized for.
    pub cpu: String,
    /// `(kernel, variant)`: the kernels that run a variant for a CPU extension.
    pub variants: Vec<(String, String)>,
}

static INIT: Once = Once::new();

fn init() -> Result<(), String> {
    let mut err = None;
    INIT.call_once(|| {
        if let Err(e) = Target::initialize_native(&InitializationConfig::default()) {
            err = Some(e);
        }
    });
    err.map_or(Ok(()), Err)
}

/// Names of the externally visible functions defined in LLVM IR text.
fn kernel_names(ll: &str) -> Vec<String> {
    ll.lines()
        .filter(|l| l.starts_with("define ") && !l.contains(" internal ") && !l.contains(" private "))
        .filter_map(|l| {
            let at = l.find('@')? + 1;
            let end = at + l[at..].find('(')?;
            Some(l[at..end].trim_matches('"').to_string())
        })
        .collect()
}

/// Which kernel variants for CPU extensions (`Kernel::variants`, functions
/// named `{kernel}__{feature}`) the JIT may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variants {
    /// Those whose feature the host reports (the default; `GEMMA4C_JIT_VARIANTS=0`
    /// in the environment turns them off, to compare both on one machine).
    Host,
    /// None: every kernel runs its portable body.
    Off,
}

impl Variants {
    fn from_env() -> Variants {
        match std::env::var("GEMMA4C_JIT_VARIANTS") {
            Ok(v) if v.trim() == "0" => Variants::Off,
            _ => Variants::Host,
        }
    }
}

/// Splits the kernel names into those to compile and `(kernel, variant)`
/// pairs: where the host has a variant's feature the variant is compiled and
/// runs under the kernel's name (the portable body is not compiled); elsewhere
/// the variant is dropped before code generation (its instructions would not
/// exist there).
fn choose_variants(names: Vec<String>, features: &str, variants: Variants) -> (Vec<String>, Vec<(String, String)>) {
    let has = |f: CpuFeature| variants == Variants::Host && features.split(',').any(|h| h == f.llvm_feature());
    let mut chosen = Vec::new();
    for n in &names {
        for f in CpuFeature::ALL {
            if let Some(base) = n.strip_suffix(&format!("__{}", f.suffix())) {
                if has(f) && names.iter().any(|b| b == base) {
                    chosen.push((base.to_string(), n.clone()));
                }
            }
        }
    }
    let is_variant = |n: &str| {
        CpuFeature::ALL
            .iter()
            .any(|f| n.ends_with(&format!("__{}", f.suffix())))
    };
    let compiled = names
        .into_iter()
        .filter(|n| {
            let replaced = chosen.iter().any(|(b, _)| b == n);
            let used = chosen.iter().any(|(_, v)| v == n);
            used || (!replaced && !is_variant(n))
        })
        .collect();
    (compiled, chosen)
}

impl JitModule {
    /// Compiles LLVM IR text on up to `threads` threads. `cpu_override`
    /// replaces the host CPU name (its default features are then used, and no
    /// variant for a CPU extension runs).
    pub fn compile(ll: &str, cpu_override: Option<&str>, threads: usize) -> Result<JitModule, String> {
        Self::compile_variants(ll, cpu_override, threads, Variants::from_env())
    }

    /// `compile`, choosing the kernel variants for CPU extensions explicitly.
    pub fn compile_variants(
        ll: &str,
        cpu_override: Option<&str>,
        threads: usize,
        variants: Variants,
    ) -> Result<JitModule, String> {
        init()?;
        let start = Instant::now();
        let (cpu, features) = match cpu_override {
            Some(c) => (c.to_string(), String::new()),
            None => (
                TargetMachine::get_host_cpu_name().to_string(),
                TargetMachine::get_host_cpu_features().to_string(),
            ),
        };
        let (names, chosen) = choose_variants(kernel_names(ll), &features, variants);
        let parts = threads.clamp(1, names.len().max(1));
        let mut shares = vec![BTreeSet::new(); parts];
        for (i, n) in names.into_iter().enumerate() {
            shares[i % parts].insert(n);
        }
        let mut functions = HashMap::new();
        let mut keepers = Vec::new();
        let mut results = Vec::new();
        for share in shares {
            let (ll, cpu, features) = (ll.to_string(), cpu.clone(), features.clone());
            let (result_tx, result_rx) = mpsc::channel();
            let (release_tx, release_rx) = mpsc::channel::<()>();
            let handle = std::thread::Builder::new()
                .name("gemma4c-llvm".into())
                .spawn(move || {
                    let context = Context::create();
                    let compiled = compile_part(&context, &ll, &cpu, &features, &share);
                    match compiled {
                        Ok((engine, addrs)) => {
                            let _ = result_tx.send(Ok(addrs));
                            // Keep the code alive until the module is dropped.
                            let _ = release_rx.recv();
                            drop(engine);
                        }
                        Err(e) => {
                            let _ = result_tx.send(Err(e));
                        }
                    };
                })
                .map_err(|e| format!("starting an LLVM thread: {e}"))?;
            keepers.push((release_tx, handle));
            results.push(result_rx);
        }
        let mut jit = JitModule {
            functions: HashMap::new(),
            keepers,
            compile_ms: 0.0,
            cpu,
            variants: Vec::new(),
        };
        for rx in results {
            let addrs = rx.recv().map_err(|_| "an LLVM compile thread died".to_string())??;
            functions.extend(addrs);
        }
        for (base, variant) in &chosen {
            let f = functions[variant];
            functions.insert(base.clone(), f);
        }
        jit.variants = chosen;
        jit.functions = functions;
        jit.compile_ms = start.elapsed().as_secs_f64() * 1e3;
        Ok(jit)
    }

    /// The variant `kernel` runs, if it runs one.
    pub fn variant(&self, kernel: &str) -> Option<&str> {
        self.variants.iter().find(|(b, _)| b == kernel).map(|(_, v)| v.as_str())
    }

    /// Address of a kernel.
    pub fn function(&self, name: &str) -> Result<usize, String> {
        self.functions
            .get(name)
            .map(|&(addr, _)| addr)
            .ok_or_else(|| format!("kernels.ll has no kernel `{name}` (is it stale? recompile the plan)"))
    }

    /// Address of a kernel called with `buffers` buffer arguments, after
    /// checking its type: `void (ptr × buffers, i64 begin, i64 end)`.
    pub fn kernel(&self, name: &str, buffers: usize) -> Result<usize, String> {
        let addr = self.function(name)?;
        let have = self.functions[name].1;
        if have != buffers {
            return Err(format!(
                "kernels.ll: kernel `{name}` takes {have} buffers, the plan passes {buffers} (recompile the plan)"
            ));
        }
        Ok(addr)
    }
}

type Compiled<'ctx> = (
    inkwell::execution_engine::ExecutionEngine<'ctx>,
    Vec<(String, (usize, usize))>,
);

/// Buffer parameters of a kernel whose type is `void (ptr..., i64, i64)`.
fn kernel_arity(f: inkwell::values::FunctionValue) -> Result<usize, String> {
    let ty = f.get_type();
    let params = ty.get_param_types();
    let ok = ty.get_return_type().is_none()
        && params.len() >= 2
        && params[..params.len() - 2].iter().all(|t| t.is_pointer_type())
        && params[params.len() - 2..]
            .iter()
            .all(|t| t.is_int_type() && t.into_int_type().get_bit_width() == 64);
    if !ok {
        return Err(format!(
            "kernels.ll: `{}` has type `{}`, a kernel is `void (ptr..., i64, i64)` (recompile the plan)",
            f.get_name().to_string_lossy(),
            ty.print_to_string().to_string_lossy()
        ));
    }
    Ok(params.len() - 2)
}

/// Kernels may only call LLVM intrinsics: anything else would be resolved
/// against this process's symbols (or crash) when the code runs.
fn check_no_externals(module: &inkwell::module::Module) -> Result<(), String> {
    for f in module.get_functions() {
        let name = f.get_name().to_string_lossy();
        if f.count_basic_blocks() == 0 && !name.starts_with("llvm.") {
            return Err(format!(
                "kernels.ll declares `{name}` without defining it (kernels may only call LLVM intrinsics)"
            ));
        }
    }
    for g in module.get_globals() {
        if g.is_declaration() {
            return Err(format!(
                "kernels.ll declares the external global `{}` (kernels use none)",
                g.get_name().to_string_lossy()
            ));
        }
    }
    Ok(())
}

/// The vector width the kernels' loops should use. LLVM's tuning for recent
/// Intel cores prefers 256-bit vectors even where AVX-512 exists (to avoid the
/// clock drop of older parts); the kernels are long FMA and unpacking loops
/// that run twice as many lanes per instruction at 512 bits, so a host with
/// AVX-512F gets 512-bit vectors. Other hosts keep LLVM's choice, and so does
/// `GEMMA4C_JIT_VECTOR_BITS=256` (for comparing the two on one machine).
fn vector_width(features: &str) -> Option<&'static str> {
    let avx512 = features.split(',').any(|f| f == "+avx512f");
    let forced_256 = std::env::var("GEMMA4C_JIT_VECTOR_BITS").is_ok_and(|v| v.trim() == "256");
    (avx512 && !forced_256).then_some("512")
}

/// Parses the module, drops the kernels outside `keep`, optimizes and compiles the rest.
fn compile_part<'ctx>(
    ctx: &'ctx Context,
    ll: &str,
    cpu: &str,
    features: &str,
    keep: &BTreeSet<String>,
) -> Result<Compiled<'ctx>, String> {
    let buffer = MemoryBuffer::create_from_memory_range_copy(ll.as_bytes(), "kernels.ll");
    let module = ctx
        .create_module_from_ir(buffer)
        .map_err(|e| format!("kernels.ll does not parse: {}", e.to_string()))?;
    let triple = TargetMachine::get_default_triple();
    let target = Target::from_triple(&triple).map_err(|e| e.to_string())?;
    let tm = target
        .create_target_machine(
            &triple,
            cpu,
            features,
            OptimizationLevel::Aggressive,
            RelocMode::Default,
            CodeModel::JITDefault,
        )
        .ok_or("LLVM has no target machine for this host")?;
    module.set_triple(&triple);
    module.set_data_layout(&tm.get_target_data().get_data_layout());
    module
        .verify()
        .map_err(|e| format!("kernels.ll is not valid LLVM IR: {}", e.to_string()))?;
    check_no_externals(&module)?;
    let mut kept = Vec::new();
    let functions: Vec<_> = module.get_functions().collect();
    for f in functions {
        if f.count_basic_blocks() == 0 {
            continue;
        }
        let name = f.get_name().to_string_lossy().into_owned();
        let exported = !matches!(f.get_linkage(), Linkage::Internal | Linkage::Private);
        if exported && !keep.contains(&name) {
            // SAFETY: kernels do not call each other, so nothing refers to `f`.
            unsafe { f.delete() };
            continue;
        }
        f.add_attribute(AttributeLoc::Function, ctx.create_string_attribute("target-cpu", cpu));
        if !features.is_empty() {
            f.add_attribute(
                AttributeLoc::Function,
                ctx.create_string_attribute("target-features", features),
            );
        }
        if let Some(width) = vector_width(features) {
            f.add_attribute(
                AttributeLoc::Function,
                ctx.create_string_attribute("prefer-vector-width", width),
            );
        }
        if exported {
            kept.push((name, kernel_arity(f)?));
        }
    }
    module
        .run_passes("default<O3>", &tm, PassBuilderOptions::create())
        .map_err(|e| format!("optimizing kernels.ll: {}", e.to_string()))?;
    let engine = module
        .create_jit_execution_engine(OptimizationLevel::Aggressive)
        .map_err(|e| format!("creating the JIT: {}", e.to_string()))?;
    let mut addrs = Vec::with_capacity(kept.len());
    for (name, arity) in kept {
        let a = engine
            .get_function_address(&name)
            .map_err(|e| format!("compiling kernel `{name}`: {e:?}"))?;
        addrs.push((name, (a, arity)));
    }
    Ok((engine, addrs))
}

impl Drop for JitModule {
    fn drop(&mut self) {
        for (release, handle) in self.keepers.drain(..) {
            drop(release);
            let _ = handle.join();
        }
    }
}
