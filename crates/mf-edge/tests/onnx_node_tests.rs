//! ONNX's own backend node tests (cases of the `onnx` package, written by
//! `tools/onnx-node-tests`, which tools/setup runs) on the native engine: every case that uses
//! an op the engine runs. Each case must either match ONNX's expected outputs (rtol 1e-3,
//! atol 1e-7, the backend suite's defaults; integers exactly; a case of several outputs is
//! checked on its first) or be refused with an error:
//! never a wrong answer and never a panic. The cases that pass are listed in
//! `onnx_node_tests.txt`: a case that stops passing, or starts, fails this test until the list
//! says so. `MF_SHOW_REFUSALS=1 cargo test -p mf-edge --test onnx_node_tests -- --nocapture`
//! prints why each other case was refused.
use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use mf_core::onnx as pb;
use mf_edge::native::NativeEngine;
use mf_edge::tensor::Value;
use mf_kernels::Isa;
use prost::Message;

const EXPECTED: &str = include_str!("onnx_node_tests.txt");

/// Where tools/onnx-node-tests wrote the cases.
fn cases_dir() -> PathBuf {
    std::env::var_os("MF_ONNX_NODE_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME"))
                .join(".cache/meanflow-edge/onnx-node-tests")
        })
}

/// What the engine did with one case.
enum Outcome {
    Pass,
    Refused(String),
    Wrong(String),
}

fn read_tensor(path: &Path) -> anyhow::Result<pb::TensorProto> {
    Ok(pb::TensorProto::decode(std::fs::read(path)?.as_slice())?)
}

fn close(got: &Value, want: &Value) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?}, expected {:?}",
            got.shape(),
            want.shape()
        ));
    }
    match (got, want) {
        (Value::F32(g, _), Value::F32(w, _)) => {
            for (i, (&g, &w)) in g.iter().zip(w).enumerate() {
                let same =
                    (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= 1e-7 + 1e-3 * w.abs();
                if !same {
                    return Err(format!("element {i}: {g}, expected {w}"));
                }
            }
            Ok(())
        }
        (g, w) if g == w => Ok(()),
        (g, w) => Err(format!(
            "{} values differ from the expected {}",
            g.type_name(),
            w.type_name()
        )),
    }
}

/// Runs every data set of one case.
fn run_case(dir: &Path) -> Outcome {
    let model = match std::fs::read(dir.join("model.onnx"))
        .map_err(anyhow::Error::from)
        .and_then(|b| Ok(pb::ModelProto::decode(b.as_slice())?))
    {
        Ok(m) => m,
        Err(e) => return Outcome::Wrong(format!("unreadable case: {e}")),
    };
    let mut graph = model.graph.unwrap_or_default();
    // The engine computes one output: a case of several (LayerNormalization's mean and
    // inverse deviation) is run for its first, which its expected output_0 still checks.
    graph.output.truncate(1);
    let engine = match NativeEngine::from_graph(&graph, Isa::select().unwrap()) {
        Ok(e) => e,
        Err(e) => return Outcome::Refused(format!("{e:#}")),
    };
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    for set in sets {
        let mut inputs = Vec::new();
        for (j, input) in graph.input.iter().enumerate() {
            let proto = read_tensor(&set.join(format!("input_{j}.pb"))).unwrap();
            match Value::from_proto(&proto) {
                Ok(v) => inputs.push((input.name.as_str(), v)),
                // An input type the engine has no values of: it cannot be asked.
                Err(e) => return Outcome::Refused(format!("input {}: {e:#}", input.name)),
            }
        }
        let got = match engine.run(inputs) {
            Ok(v) => v,
            Err(e) => return Outcome::Refused(format!("{e:#}")),
        };
        let want = read_tensor(&set.join("output_0.pb")).unwrap();
        let want = match Value::from_proto(&want) {
            Ok(v) => v,
            Err(e) => {
                return Outcome::Wrong(format!(
                    "returned {} where ONNX expects a type it does not have ({e:#})",
                    got.type_name()
                ));
            }
        };
        if let Err(why) = close(&got, &want) {
            return Outcome::Wrong(format!("{}: {why}", set.display()));
        }
    }
    Outcome::Pass
}

#[test]
fn onnx_node_tests_pass_or_are_refused_never_wrong() {
    let root = cases_dir();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| {
            panic!(
                "no ONNX node tests in {} ({e}): run tools/onnx-node-tests (tools/setup does)",
                root.display()
            )
        })
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    cases.sort();
    assert!(
        cases.len() > 100,
        "only {} cases in {}",
        cases.len(),
        root.display()
    );
    let (mut passed, mut refused, mut bad) = (BTreeSet::new(), 0usize, Vec::new());
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        match catch_unwind(AssertUnwindSafe(|| run_case(case))) {
            Ok(Outcome::Pass) => {
                passed.insert(name);
            }
            Ok(Outcome::Refused(why)) => {
                assert!(!why.trim().is_empty(), "{name}: refused without a reason");
                if std::env::var_os("MF_SHOW_REFUSALS").is_some() {
                    println!("{name}: {why}");
                }
                refused += 1;
            }
            Ok(Outcome::Wrong(why)) => bad.push(format!("{name}: wrong answer: {why}")),
            Err(_) => bad.push(format!("{name}: panicked")),
        }
    }
    println!(
        "{} cases: {} pass, {refused} refused, {} wrong or panicked",
        cases.len(),
        passed.len(),
        bad.len()
    );
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    let expected: BTreeSet<String> = EXPECTED
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let lost: Vec<_> = expected.difference(&passed).collect();
    let gained: Vec<_> = passed.difference(&expected).collect();
    assert!(
        lost.is_empty() && gained.is_empty(),
        "no longer pass: {lost:?}\nnow pass (add them to onnx_node_tests.txt): {gained:?}"
    );
}
