//! The one dispatch point: `MF_KERNEL` forces a family, refuses unknown or unavailable ones,
//! and otherwise the best available family is chosen. Each case runs this test binary again
//! as a child process with the variable set, since the environment is process-wide. Under
//! emulation, `MF_TEST_RUNNER` (e.g. `qemu-aarch64 -cpu max`) is the command that runs it.
use mf_kernels::{Isa, KernelError};
use std::process::Command;

const CHILD: &str = "MF_KERNELS_DISPATCH_CHILD";

/// In the child: reports what `Isa::select` says, as a line the parent reads.
#[test]
fn report_selection() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    match Isa::select() {
        Ok(isa) => println!("selected={}", isa.name()),
        Err(e) => println!("refused={e}"),
    }
}

fn select_with(value: &str) -> String {
    let exe = std::env::current_exe().unwrap();
    let runner = std::env::var("MF_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut cmd = match words.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(words).arg(exe);
            cmd
        }
        None => Command::new(exe),
    };
    let out = cmd
        .args([
            "report_selection",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("MF_KERNEL", value)
        .output()
        .expect("the test binary runs again");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // libtest prints the test's name on the same line before the report.
    stdout
        .lines()
        .find_map(|l| {
            l.find("selected=")
                .or_else(|| l.find("refused="))
                .map(|at| l[at..].to_string())
        })
        .unwrap_or_else(|| panic!("no report in: {stdout}"))
}

#[test]
fn mf_kernel_forces_each_available_family() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    for isa in Isa::ALL.into_iter().filter(|isa| isa.is_available()) {
        assert_eq!(select_with(isa.name()), format!("selected={}", isa.name()));
    }
    assert_eq!(
        select_with(""),
        format!("selected={}", Isa::detect().name())
    );
}

#[test]
fn mf_kernel_refuses_unknown_and_unavailable_families() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    assert_eq!(
        select_with("sse9"),
        format!("refused={}", KernelError::UnknownKernel)
    );
    if let Some(missing) = Isa::ALL.into_iter().find(|isa| !isa.is_available()) {
        let report = select_with(missing.name());
        assert!(report.starts_with("refused=kernel"), "{report}");
        assert!(report.contains("available: scalar"), "{report}");
    }
}
