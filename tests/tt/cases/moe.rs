//! MoE kernel cases: the fused router and the expert matmuls.

use super::*;

/// Dense routing row from `moe_route`'s (weights, experts).
fn dense(route: &[Tensor], e: usize) -> Vec<f32> {
    let (w, ids) = (route[0].as_f32().unwrap(), route[1].as_i32().unwrap());
    let mut row = vec![0.0; e];
    for (x, &i) in w.iter().zip(ids) {
        row[i as usize] = *x;
    }
    row
}

pub(super) fn moe_cases(b: &mut Bundle, rng: &mut Rng) {
    let eps = 1e-6;
    for (e, top_k) in [(8usize, 2usize), (40, 4)] {
        let mut c = Case::new(&format!("moe_route_{e}_top{top_k}"));
        // Distinct scores 0.3 apart: the top-k choice is not at the mercy of bf16 rounding.
        let scores = rng
            .permutation(e)
            .iter()
            .map(|&i| 0.3 * i as f32 - 2.0)
            .collect::<Vec<_>>();
        let pes = rng.range(e, 0.5, 1.5);
        let route = eval(&Op::MoeRoute { top_k }, &[&t2(&[1, e], &scores), &t2(&[e], &pes)]).unwrap();
        let k = b.k(kernels::moe_route(&b.t, "test", e, top_k));
        let vals = BTreeMap::from([("pes".to_string(), pes)]);
        c.act("scores", flat(e), &scores);
        let (r, cc, src) = row_source("pes", flat(e));
        c.weight("pes", r, cc, src, &vals);
        c.weight("pad", 1, e.div_ceil(32) * 32, Source::MoePad { experts: e }, &vals);
        c.zeros("y", flat(e));
        c.call(&k, None, &["scores", "pes", "pad", "y"]);
        c.expect_row("y", flat(e), &dense(&route, e));
        b.cases.push(c);
    }
    // Fused router: rms_norm(x) * scale @ proj^T * H^-1/2, then routing.
    let (h, e, top_k) = (128, 8, 2);
    let mut c = Case::new("moe_router_128_8_top2");
    let x = rng.normal(h, 1.0);
    let (scale, proj, pes) = (rng.range(h, 0.5, 1.5), rng.normal(e * h, 0.5), rng.range(e, 0.5, 1.5));
    let scalar = (h as f32).powf(-0.5);
    let route = eval(
        &Op::MoeRouter { eps, scalar, top_k },
        &[
            &t2(&[1, h], &x),
            &t2(&[h], &scale),
            &t2(&[e, h], &proj),
            &t2(&[e], &pes),
        ],
    )
    .unwrap();
    let vals = BTreeMap::from([
        ("scale".to_string(), scale),
        ("proj".to_string(), proj),
        ("pes".to_string(), pes),
    ]);
    let epi = Some((
        "scale",
        format!("acc * ttl.block.fill({}, shp)", kernels::py_f32(scalar)),
    ));
    let k1 = b.k(kernels::logits_head(&b.t, "test", 1, h / 32, 1, h, eps, epi));
    let k2 = b.k(kernels::moe_route(&b.t, "test", e, top_k));
    c.act("x", flat(h), &x);
    let (r, cc, src) = row_source("scale", flat(h));
    c.weight("scale", r, cc, src, &vals);
    let (r, cc, src) = transposed(e, h, flat(h), flat(e), "proj");
    c.weight("proj", r, cc, src, &vals);
    let (r, cc, src) = row_source("pes", flat(e));
    c.weight("pes", r, cc, src, &vals);
    c.weight("pad", 1, 32, Source::MoePad { experts: e }, &vals);
    c.zeros("scores", flat(e));
    c.zeros("y", flat(e));
    c.call(&k1, None, &["x", "scale", "proj", "scores"]);
    c.call(&k2, None, &["scores", "pes", "pad", "y"]);
    c.expect_row("y", flat(e), &dense(&route, e));
    b.cases.push(c);
    // Routed experts, computed densely: gate/up matmul, weighted GeGLU, down matmul.
    let (h, e, i, top_k) = (128, 8, 32, 2);
    let mut c = Case::new("moe_experts_8x32");
    let x = rng.normal(h, 1.0);
    let gu = rng.normal(e * 2 * i * h, (h as f32).powf(-0.5));
    let down = rng.normal(e * h * i, (i as f32).powf(-0.5));
    let route = eval(
        &Op::MoeRoute { top_k },
        &[&t2(&[1, e], &rng.normal(e, 3.0)), &t2(&[e], &rng.range(e, 0.5, 1.5))],
    )
    .unwrap();
    let want = f(&eval(
        &Op::MoeExperts,
        &[
            &t2(&[1, h], &x),
            &route[0],
            &route[1],
            &t2(&[e, 2 * i, h], &gu),
            &t2(&[e, h, i], &down),
        ],
    )
    .unwrap()[0]);
    let vals = BTreeMap::from([("gu".to_string(), gu), ("down".to_string(), down)]);
    let it = i.div_ceil(32);
    let lgu = DevLayout {
        rows: 1,
        groups: 2 * e,
        width: i,
    };
    let lact = DevLayout {
        rows: 1,
        groups: e,
        width: i,
    };
    let k1 = b.k(kernels::matmul(&b.t, "test", 1, h / 32, lgu.col_tiles(), None));
    let k2 = b.k(kernels::moe_act(&b.t, "test", e, it));
    let k3 = b.k(kernels::matmul(&b.t, "test", 1, lact.col_tiles(), h / 32, None));
    c.act("x", flat(h), &x);
    c.act("wr", flat(e), &dense(&route, e));
    c.weight(
        "gu",
        h,
        2 * e * it * 32,
        Source::MoeGateUp {
            key: "gu".into(),
            experts: e,
            inter: i,
            xin: flat(h),
        },
        &vals,
    );
    c.weight(
        "down",
        e * it * 32,
        h,
        Source::MoeDown {
            key: "down".into(),
            experts: e,
            inter: i,
            out: flat(h),
        },
        &vals,
    );
    c.weight("ex", 32, e * it * 32, Source::MoeExpand { experts: e, inter: i }, &vals);
    c.zeros("s1", lgu);
    c.zeros("s2", lact);
    c.zeros("y", flat(h));
    c.call(&k1, None, &["x", "gu", "s1"]);
    c.call(&k2, None, &["s1", "wr", "ex", "s2"]);
    c.call(&k3, None, &["s2", "down", "y"]);
    c.expect_row("y", flat(h), &want);
    b.cases.push(c);
}
