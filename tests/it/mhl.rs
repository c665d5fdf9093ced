//! ASC MHL interoperability: folders sealed by `masv seal` verified by the ASC's reference
//! implementation (the `ascmhl` Python package, which `.ci/run` installs), and folders sealed by
//! the reference verified by `masv verify`, with altered and missing files found both ways.

use std::path::Path;
use std::process::{Command, Output};

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program}: {e}; the reference ASC MHL tool is installed by .ci/run \
             (pip install ascmhl)"
            )
        })
}

fn masv(args: &[&str]) -> Output {
    run(env!("CARGO_BIN_EXE_masv"), args)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A folder with nesting, an empty folder, a name XML must escape, and random bytes.
fn delivery(root: &Path) {
    std::fs::create_dir_all(root.join("A001/CLIPS/deep")).unwrap();
    std::fs::create_dir_all(root.join("A001/EMPTY")).unwrap();
    std::fs::write(root.join("readme.txt"), "camera card A001\n").unwrap();
    let bytes: Vec<u8> = (0..700_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(root.join("A001/CLIPS/A001C001 & <take 2>.mov"), &bytes).unwrap();
    std::fs::write(root.join("A001/CLIPS/deep/sidecar.xml"), "<x/>").unwrap();
}

/// The `<roothash>` block of a generation: content and structure hashes of the whole tree.
fn root_hash(generation: &Path) -> String {
    let text = std::fs::read_to_string(generation).unwrap();
    let start = text.find("<roothash>").expect("a roothash");
    let end = text.find("</roothash>").unwrap();
    // Hash dates differ between the two tools; the digests must not.
    text[start..end]
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.find('>').map(|i| l[i + 1..].replace(['<', '/'], " "))
        })
        .collect::<Vec<_>>()
        .join("|")
}

fn only_generation(root: &Path) -> std::path::PathBuf {
    let mut mhl: Vec<_> = std::fs::read_dir(root.join("ascmhl"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mhl"))
        .collect();
    assert_eq!(mhl.len(), 1, "{mhl:?}");
    mhl.pop().unwrap()
}

#[test]
fn a_folder_sealed_by_masv_verifies_with_the_reference_tool_and_alterations_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours");
    let theirs = dir.path().join("theirs");
    delivery(&ours);
    delivery(&theirs);

    let sealed = masv(&["seal", ours.to_str().unwrap()]);
    assert!(sealed.status.success(), "{}", text(&sealed));
    // The reference verifies every file, and recomputes and compares every folder hash.
    for args in [&["verify"][..], &["verify", "-dh"][..]] {
        let mut a = args.to_vec();
        a.push(ours.to_str().unwrap());
        let out = run("ascmhl-debug", &a);
        assert!(out.status.success(), "ascmhl-debug {a:?}: {}", text(&out));
    }
    // The same tree sealed by the reference in the same format has the same root hashes.
    let out = run(
        "ascmhl",
        &["create", "-h", "xxh64", theirs.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        root_hash(&only_generation(&ours)),
        root_hash(&only_generation(&theirs))
    );

    // Altered and missing: the reference fails, and so does ours, naming both.
    std::fs::write(ours.join("readme.txt"), "camera card A002\n").unwrap();
    std::fs::remove_file(ours.join("A001/CLIPS/deep/sidecar.xml")).unwrap();
    let out = run("ascmhl-debug", &["verify", ours.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("readme.txt"), "{}", text(&out));
    let out = masv(&["verify", ours.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("altered  readme.txt"), "{t}");
    assert!(t.contains("missing  A001/CLIPS/deep/sidecar.xml"), "{t}");
}

#[test]
fn a_folder_sealed_by_the_reference_tool_verifies_with_masv_and_alterations_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("card");
    delivery(&root);
    // xxh128, the reference's default, then a second generation in md5 on top.
    let out = run("ascmhl", &["create", root.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run("ascmhl", &["create", "-h", "md5", root.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));

    let out = masv(&["verify", root.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("3 files verified, 0 altered, 0 missing, 0 new"),
        "{}",
        text(&out)
    );

    let clip = root.join("A001/CLIPS/A001C001 & <take 2>.mov");
    let mut bytes = std::fs::read(&clip).unwrap();
    bytes[123_456] ^= 1;
    std::fs::write(&clip, bytes).unwrap();
    std::fs::remove_file(root.join("readme.txt")).unwrap();
    std::fs::write(root.join("A001/extra.txt"), "not sealed").unwrap();
    let out = masv(&["verify", "--json", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verified"], 1, "{report}");
    assert_eq!(
        report["altered"][0]["path"], "A001/CLIPS/A001C001 & <take 2>.mov",
        "{report}"
    );
    assert_eq!(report["altered"][0]["format"], "xxh128", "{report}");
    assert_eq!(report["missing"], serde_json::json!(["readme.txt"]));
    assert_eq!(report["new"], serde_json::json!(["A001/extra.txt"]));

    // Sealing on top of their history records the failure, and the reference reads our
    // generation as part of its chain.
    let out = masv(&["seal", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = run("ascmhl", &["info", root.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Generation 3"), "{}", text(&out));
}

#[test]
fn a_generation_edited_after_sealing_is_refused_by_both_tools() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("d");
    delivery(&root);
    assert!(masv(&["seal", root.to_str().unwrap()]).status.success());
    let generation = only_generation(&root);
    let text_before = std::fs::read_to_string(&generation).unwrap();
    std::fs::write(&generation, text_before.replacen("in-place", "transfer", 1)).unwrap();
    let out = masv(&["verify", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("modified after it was sealed"),
        "{}",
        text(&out)
    );
    let out = run("ascmhl-debug", &["verify", root.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
}
