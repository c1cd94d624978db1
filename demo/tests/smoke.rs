//! The demo the README starts must keep working: run it in smoke mode.

#[test]
fn the_demo_answers_the_requests_the_readme_suggests() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_demo"))
        .arg("--smoke")
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "demo smoke test ok: 20 requests checked, plugins, HTTPS and metrics included"
        ),
        "{stdout}"
    );
}
