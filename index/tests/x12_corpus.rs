//! Every X12 file of the shared corpus (`../shared/data/x12`) is either read or
//! refused with the place it failed; the deliberately malformed ones are refused;
//! real values come out of the real files.

use std::path::{Path, PathBuf};

use vault_index::extract::{detect, extract, Format};

fn corpus() -> PathBuf {
    let dir = std::env::var_os("BILLVAULT_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(
                std::env::var("CARGO_MANIFEST_DIR")
                    .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
            )
            .join("../../shared/data")
        });
    assert!(
        dir.is_dir(),
        "shared test data not found at {}: check the project out beside shared/ or set BILLVAULT_SHARED_DATA",
        dir.display()
    );
    dir.join("x12")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read corpus") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if !path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("LICENSE"))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_file_is_read_or_refused_with_its_place() {
    let all = files(&corpus());
    assert!(all.len() >= 30, "{} X12 files", all.len());
    let mut read = 0;
    for path in &all {
        let bytes = std::fs::read(path).expect("read file");
        match extract(Format::X12, &bytes) {
            Ok(_) => read += 1,
            Err(e) => {
                assert!(
                    e.location.starts_with("segment ") || e.location.starts_with("byte "),
                    "{}: {e}",
                    path.display()
                );
                // The error names places and shapes, never values of the file.
                for value in ["ANGELASZEK", "SMITH", "SECRET"] {
                    assert!(!e.to_string().contains(value), "{}: {e}", path.display());
                }
            }
        }
    }
    assert!(read >= all.len() - 5, "{read} of {} files read", all.len());
}

#[test]
fn the_malformed_samples_are_refused() {
    let dir = corpus().join("imsweb-x12-parser/837_5010");
    for (name, location) in [
        ("x12_no_isa_line.txt", "byte 0"),
        ("x12_bad_first_line.txt", "segment 1 (ISA)"),
        ("x12_bad_segment_identifier.txt", "segment 6"),
    ] {
        let bytes = std::fs::read(dir.join(name)).expect("read sample");
        let e = extract(Format::X12, &bytes).expect_err(name);
        assert!(e.location.starts_with(location), "{name}: {e}");
    }
}

#[test]
fn real_values_come_out_of_real_files() {
    let x12 = corpus();
    let remit = std::fs::read(x12.join("pyx12/835_mult_loops.txt")).expect("835");
    assert_eq!(detect(&remit, "text/plain"), Some(Format::X12));
    let fields = extract(Format::X12, &remit).expect("835 reads");
    let has = |field: &str, value: &str| {
        fields
            .get(field)
            .is_some_and(|values| values.iter().any(|v| v.contains(value)))
    };
    assert!(
        has("patient_name", "BACH"),
        "{:?}",
        fields.get("patient_name")
    );
    assert!(has("claim_id", "2005555A"));
    assert!(has("payer_claim_id", "4276512332"));

    let claim = std::fs::read(x12.join("x12-types/005010_837.edi")).expect("837");
    let fields = extract(Format::X12, &claim).expect("837 reads");
    assert!(
        fields["claim_id"].iter().any(|v| v == "26463774"),
        "{fields:?}"
    );
    assert!(
        fields["member_id"].iter().any(|v| v == "JS00111223333"),
        "{fields:?}"
    );
    assert!(
        fields["patient_name"].iter().any(|v| v.contains("SMITH")),
        "{fields:?}"
    );
}
