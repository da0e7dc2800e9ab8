//! The `ordo-check` command line: its flags are `CheckArgs`, and a run that cannot be
//! carried out exits with status 3 saying why, before anything starts.

use std::process::{Command, Output, Stdio};

fn ordo_check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ordo-check"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ordo-check")
}

#[test]
fn help_lists_the_checker_flags() {
    let out = ordo_check(&["--help"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for flag in [
        "--endpoints",
        "--ordo-bin",
        "--faults",
        "--seed",
        "--server-arg",
    ] {
        assert!(
            stdout.contains(flag),
            "{flag} missing from --help: {stdout}"
        );
    }
}

#[test]
fn a_run_that_cannot_start_exits_3_and_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-ordo");
    let missing = missing.to_str().expect("utf-8 path");
    let cases: &[(&[&str], &str)] = &[
        (&["--ordo-bin", missing], "does not exist"),
        (&["--workloads", "queue"], "queue"),
        (&["--faults", "meteor"], "meteor"),
    ];
    for (args, needle) in cases {
        let out = ordo_check(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: expected {needle:?} in {stderr}"
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("temp dir").count(),
        0,
        "a refused run left files behind"
    );
}

#[test]
fn an_unknown_flag_is_refused_by_the_parser() {
    let out = ordo_check(&["--nodez", "3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nodez"));
}
