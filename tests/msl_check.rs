//! kernels.metal through `clang++-19 -fsyntax-only -x c++ -std=c++17` against a shim of the
//! Metal builtins it uses (tests/msl/metal_stdlib), after deleting the `[[...]]` attributes by
//! text (no macro can remove them). This catches typos, undeclared names, wrong argument counts
//! and type errors in C++ terms; it does not check Metal attributes, address spaces or that
//! the Metal compiler accepts the file (no Metal compiler on Linux). Skipped, with a message,
//! without clang++-19 (scripts/setup.sh installs it).

mod common;

use std::process::Command;

use common::*;

fn strip_attributes(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(i) = rest.find("[[") {
        out.push_str(&rest[..i]);
        let j = rest[i..].find("]]").expect("closed attribute");
        rest = &rest[i + j + 2..];
    }
    out.push_str(rest);
    out
}

#[test]
fn kernels_metal_pass_a_cxx_syntax_check_for_fixtures_and_released_configs() {
    if Command::new("clang++-19").arg("--version").output().is_err() {
        eprintln!("SKIPPED: clang++-19 not found (scripts/setup.sh installs clang-19)");
        return;
    }
    let shim = repo_root().join("tests/msl");
    for src in fixture_and_released_sources() {
        let tmp = compile_into_tempdir(&src, "metal");
        let text = std::fs::read_to_string(tmp.path().join("kernels.metal")).unwrap();
        let cpp = tmp.path().join("kernels.cpp");
        std::fs::write(&cpp, strip_attributes(&text)).unwrap();
        let out = Command::new("clang++-19")
            .args(["-fsyntax-only", "-x", "c++", "-std=c++17", "-I"])
            .arg(&shim)
            .arg(&cpp)
            .output()
            .expect("clang++-19");
        assert!(
            out.status.success(),
            "{src:?}: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
