//! Generates the Kotlin, Swift and Python bindings from the built `hush_ffi` library:
//! `cargo run -p hush-ffi --bin uniffi-bindgen -- generate --library <lib> --language <lang> --out-dir <dir>`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
