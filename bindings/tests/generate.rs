//! Generates the Kotlin, Swift and Python bindings from the built library with UniFFI's
//! generator (this package's `uniffi-bindgen` binary) and checks that each generates cleanly
//! with the API the apps are documented to use. Swift cannot be compiled on our machines, so
//! this is its check; bindings/test.sh then runs the Python and Kotlin tests on the output in
//! `target/bindings/<language>`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn library(bin_dir: &Path) -> PathBuf {
    // Cargo builds the package's library (cdylib included) next to its binaries.
    let name = format!("{}hush_ffi{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    [bin_dir.join(&name), bin_dir.join("deps").join(&name)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} not found next to {}", bin_dir.display()))
}

#[test]
fn kotlin_swift_and_python_generate_cleanly() {
    let bindgen = PathBuf::from(env!("CARGO_BIN_EXE_uniffi-bindgen"));
    let bin_dir = bindgen.parent().unwrap();
    let lib = library(bin_dir);
    let out = bin_dir.parent().unwrap().join("bindings");
    let _ = std::fs::remove_dir_all(&out);
    for language in ["kotlin", "swift", "python"] {
        let status = Command::new(&bindgen)
            .args(["generate", "--no-format", "--library"])
            .arg(&lib)
            .args(["--language", language, "--out-dir"])
            .arg(out.join(language))
            .status()
            .unwrap();
        assert!(status.success(), "generating {language} failed");
    }
    // The library where the Python module looks for it (its own directory) and where the
    // Kotlin tests point JNA (target/bindings/lib).
    let file = lib.file_name().unwrap();
    std::fs::copy(&lib, out.join("python").join(file)).unwrap();
    std::fs::create_dir_all(out.join("lib")).unwrap();
    std::fs::copy(&lib, out.join("lib").join(file)).unwrap();

    let read = |p: &str| std::fs::read_to_string(out.join(p)).unwrap();
    let swift = read("swift/Hush.swift");
    for api in [
        "public func createAccount(setup: ClientSetup)",
        "func sendText(conversation: String, text: String) async throws",
        "public protocol EventListener",
        "func listen(listener: EventListener) throws",
        "case Failed(",
        "case messageReceived(",
    ] {
        assert!(swift.contains(api), "Hush.swift lacks {api:?}");
    }
    assert!(read("swift/hushFFI.h").contains("uniffi_hush_ffi_fn_func_create_account"));
    assert!(read("swift/hushFFI.modulemap").contains("module HushFFI"));
    let kotlin = read("kotlin/dev/hush/hush_ffi.kt");
    assert!(kotlin.contains("suspend fun `sendText`(`conversation`: kotlin.String, `text`: kotlin.String): kotlin.String"));
    assert!(kotlin.contains("sealed class HushException"));
    let python = read("python/hush_ffi.py");
    assert!(python.contains("async def create_account(setup: ClientSetup) -> HushClient"));
}
